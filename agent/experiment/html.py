"""The experiment's HTML page (EXP_DIR/report.html): the tables of agent/experiment/tables.py and inline
SVG plots (matplotlib: each problem's effect with the overall estimate, the metric's distribution per arm,
the rates); no scripts, no network. Rendered with prompts/report/experiment.j2."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from agent.experiment.findings import RATES, REPORT_FILE, ExperimentResults
from agent.experiment.stats import METRICS, Comparison
from agent.experiment.tables import (
    ARM_HEADERS,
    COMPARE_HEADERS,
    arm_rows,
    compare_rows,
    effect_header,
    fmt_effect,
    fmt_outcome,
    fmt_value,
    fmt_x,
)
from agent.report.plots import RC as PLOT_RC
from agent.report.plots import prefix_ids, svg_text

# --- plots ------------------------------------------------------------------------------------------------
RC = {**PLOT_RC, "svg.hashsalt": "ncu-agent-experiment"}
WIN, TIE, LOSS = "#2e7d32", "#9e9e9e", "#c62828"
ARM_COLOURS = ("#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f")


def _svg(fig: Any, key: str) -> str:
    return prefix_ids(svg_text(fig), re.sub(r"[^A-Za-z0-9_-]", "_", key) + "-")


def forest_svg(c: Comparison, key: str) -> str | None:
    """Each problem's effect (B/A or B−A), coloured win/tie/loss, and the overall estimate with its CI."""
    import matplotlib
    from matplotlib.figure import Figure

    if not c.effects or c.estimate is None:
        return None
    ratio = c.metric.kind == "ratio"
    xs = [math.exp(e) if ratio else e for e in c.effects]
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(7.5, 1.3 + 0.32 * (len(xs) + 1)), layout="constrained")
        ax = fig.subplots()
        ys = list(range(len(xs)))
        colours = [
            {"tie": TIE}.get(fmt_outcome(c, e), WIN if f"{c.arm_b} wins" == fmt_outcome(c, e) else LOSS)
            for e in c.effects
        ]
        ax.scatter(xs, ys, c=colours, s=36, zorder=3, edgecolor="white", lw=0.5)
        y0 = len(xs) + 0.3
        _forest_overall(ax, c, y0, ratio)
        ax.set_yticks([*ys, y0], [*c.problems, "overall (geomean)" if ratio else "overall (mean)"])
        ax.set_ylim(y0 + 0.7, -0.7)
        _forest_x_axis(ax, c, xs, ratio)
        ax.grid(axis="y", visible=False)
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(xs) < 4 else -0.18), ncol=2, fontsize=8
        )
        return _svg(fig, key)


def _forest_overall(ax: Any, c: Comparison, y0: float, ratio: bool) -> None:
    """The overall estimate at `y0` with its confidence interval, and the line of no difference."""
    ax.errorbar(
        [c.estimate],
        [y0],
        xerr=[[c.estimate - c.ci_low], [c.ci_high - c.estimate]],
        fmt="D",
        color="#212121",
        capsize=4,
        zorder=4,
    )
    ax.axvspan(
        c.ci_low,
        c.ci_high,
        color="#90caf9",
        alpha=0.25,
        zorder=1,
        label=f"{round(c.ci_level * 100)}% CI (bootstrap over problems)",
    )
    ax.axvline(1.0 if ratio else 0.0, color="#424242", lw=0.9, ls="--", zorder=2, label="no difference")


def _forest_x_axis(ax: Any, c: Comparison, xs: list[float], ratio: bool) -> None:
    """The effect's axis: logarithmic around 1 for ratios, linear around 0 for differences, with every
    point, the interval and no-difference in view."""
    if ratio:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:.3g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        lo, hi = min([*xs, c.ci_low]), max([*xs, c.ci_high])
        ax.set_xlim(min(lo, 1) / 1.1, max(hi, 1) * 1.1)
    else:
        lo, hi = min([*xs, c.ci_low, 0]), max([*xs, c.ci_high, 0])
        pad = 0.1 * max(hi - lo, 0.2)
        ax.set_xlim(lo - pad, hi + pad)
    better = "higher" if c.metric.higher_is_better else "lower"
    label = f"{c.metric.label}: {c.arm_b}/{c.arm_a}" if ratio else f"{c.metric.label}: {c.arm_b} − {c.arm_a}"
    ax.set_xlabel(f"{label} per problem ({better} is better for {c.arm_b})")


def distribution_svg(r: ExperimentResults, metric: str, key: str) -> str | None:
    """Per arm, the metric of every finished run: a box plot with the runs as jittered points."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    arms = [a.name for a in r.arms]
    data = [[v for u in r.units if u.arm == a and (v := u.value(metric)) is not None] for a in arms]
    if not any(data):
        return None
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(5.2, 3.2), layout="constrained")
        ax = fig.subplots()
        shown = [d if d else [math.nan] for d in data]
        ax.boxplot(
            shown, positions=range(len(arms)), widths=0.5, showfliers=False, medianprops={"color": "#212121"}
        )
        rng = np.random.default_rng(0)
        for i, d in enumerate(data):
            ax.scatter(
                i + rng.uniform(-0.15, 0.15, len(d)),
                d,
                s=18,
                alpha=0.75,
                color=ARM_COLOURS[i % len(ARM_COLOURS)],
                zorder=3,
            )
        ax.set_xticks(range(len(arms)), arms)
        m = METRICS[metric]
        if metric == "speedup":
            ax.axhline(1.0, color="#424242", lw=0.8, ls="--")
            ax.set_ylabel("speedup of the run's best kernel vs its start")
        elif metric in RATES:
            ax.set_ylim(-0.05, 1.05)
            ax.set_ylabel(f"{m.label} per run")
        else:
            ax.set_ylabel(f"{m.label} per run")
        ax.set_xlabel("arm (one point per run)")
        ax.grid(axis="x", visible=False)
        return _svg(fig, key)


def rates_svg(r: ExperimentResults, key: str) -> str | None:
    """Per arm, the pooled compile, correctness and constraint-violation rates."""
    import matplotlib
    from matplotlib.figure import Figure

    if not any(s.candidates for s in r.summaries):
        return None
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(5.2, 3.2), layout="constrained")
        ax = fig.subplots()
        width = 0.8 / len(r.summaries)
        for i, s in enumerate(r.summaries):
            xs = [j + (i - (len(r.summaries) - 1) / 2) * width for j in range(3)]
            ys = [s.rates[k] or 0 for k in ("compile", "correct", "constraint")]
            ax.bar(
                xs, ys, width=width * 0.95, color=ARM_COLOURS[i % len(ARM_COLOURS)], label=s.name, zorder=2
            )
            for x, y in zip(xs, ys, strict=True):
                ax.annotate(
                    f"{100 * y:.0f}%",
                    (x, y),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    fontsize=7,
                )
        ax.set_xticks(range(3), ["compile", "correct", "constraint\nviolation"])
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("share of candidates (pooled)")
        ax.grid(axis="x", visible=False)
        ax.legend(fontsize=8, ncol=len(r.summaries), loc="upper right")
        return _svg(fig, key)


# --- the page ---------------------------------------------------------------------------------------------
def render_html(r: ExperimentResults) -> str:
    from markupsafe import Markup

    from agent.report.page import environment

    env = environment()

    def svg(text: str | None) -> Markup | None:
        return Markup(text) if text else None

    primary = [
        {
            "c": c,
            "forest": svg(forest_svg(c, key=f"forest-{c.arm_b}")),
            "header": effect_header(c),
            "rows": [
                (
                    name,
                    fmt_value(r.metric, c.a[i]),
                    fmt_value(r.metric, c.b[i]),
                    fmt_effect(c, c.effects[i]),
                    fmt_outcome(c, c.effects[i]),
                )
                for i, name in enumerate(c.problems)
            ],
        }
        for c in r.primary
    ]
    best = [[p, *[fmt_x(s.best_speedup.get(p)) if r.timed else "–" for s in r.summaries]] for p in r.problems]
    return env.get_template("experiment.j2").render(
        r=r,
        primary=primary,
        arm_headers=ARM_HEADERS,
        arm_rows=arm_rows(r),
        compare_headers=COMPARE_HEADERS,
        compare_rows=compare_rows(r.primary + r.secondary),
        comparisons=r.primary + r.secondary,
        best=best,
        distribution=svg(distribution_svg(r, r.metric, key="dist")),
        speedups=svg(distribution_svg(r, "speedup", key="speedup")) if r.metric != "speedup" else None,
        rates=svg(rates_svg(r, key="rates")),
        value=fmt_value,
        metric_label=METRICS[r.metric].label,
    )


def write_html(exp_dir: Path, r: ExperimentResults, out: Path | None = None) -> Path:
    path = out or Path(exp_dir) / REPORT_FILE
    path.write_text(render_html(r), encoding="utf-8")
    return path
