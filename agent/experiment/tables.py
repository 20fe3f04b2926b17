"""The tables of an experiment's findings (agent/experiment/findings.py): rich tables in the terminal, and
the rows and formatting that the HTML page (agent/experiment/html.py) shares with them."""

from __future__ import annotations

import math
from typing import Any

from agent.experiment.findings import RATES, ExperimentResults
from agent.experiment.stats import Comparison, fmt_p, signed


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def fmt_x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def _num(v: float | None, fmt: str = "{:.0f}") -> str:
    return "–" if v is None else fmt.format(v)


def fmt_value(metric: str, v: float | None) -> str:
    if v is None:
        return "–"
    return _pct(v) if metric in RATES else fmt_x(v) if metric == "speedup" else f"{v:.0f}"


def fmt_effect(c: Comparison, e: float) -> str:
    return f"{math.exp(e):.2f}" if c.metric.kind == "ratio" else signed(e)


def effect_header(c: Comparison) -> str:
    return f"{c.arm_b}/{c.arm_a}" if c.metric.kind == "ratio" else f"{c.arm_b}−{c.arm_a}"


def _estimate(c: Comparison) -> str:
    if c.estimate is None or c.ci_low is None or c.ci_high is None:
        return "–"
    if c.metric.kind == "ratio":
        return f"{c.estimate:.2f} [{c.ci_low:.2f}, {c.ci_high:.2f}]"
    return f"{signed(c.estimate)} [{signed(c.ci_low)}, {signed(c.ci_high)}]"


def fmt_outcome(c: Comparison, e: float) -> str:
    band = math.log1p(c.tie_band) if c.metric.kind == "ratio" else c.tie_band
    if abs(e) < band:
        return "tie"
    better = (e > 0) == c.metric.higher_is_better
    return f"{c.arm_b} wins" if better else f"{c.arm_a} wins"


def arm_rows(r: ExperimentResults) -> list[list[str]]:
    rows = []
    for s in r.summaries:
        first = (
            f"{_num(s.first_improvement_median, '{:.1f}')} ({_pct(s.improved_fraction)} of runs)"
            if s.improved_fraction is not None
            else "–"
        )
        rows.append(
            [
                s.name,
                s.spec,
                f"{s.finished}/{s.units}" + (f" ({s.failed} failed)" if s.failed else ""),
                str(s.candidates),
                _pct(s.rates["compile"]),
                _pct(s.rates["correct"]),
                _pct(s.rates["constraint"]),
                fmt_x(s.speedup_geomean) if r.timed else "not measured",
                _num(s.tokens_per_unit),
                first,
            ]
        )
    return rows


ARM_HEADERS = [
    "arm",
    "what differs",
    "runs done",
    "candidates",
    "compile",
    "correct",
    "constraint",
    "speedup (geomean)",
    "tokens / run",
    "first improvement (candidates)",
]
COMPARE_HEADERS = [
    "metric",
    "arms",
    "problems",
    "B win/tie/loss",
    "estimate [95% CI]",
    "p (perm.)",
    "p (Wilcoxon)",
]


def compare_rows(comparisons: list[Comparison]) -> list[list[str]]:
    return [
        [
            c.metric.label + (" (lower is better)" if not c.metric.higher_is_better else ""),
            f"{c.arm_b} vs {c.arm_a}",
            str(c.n),
            f"{c.wins}/{c.ties}/{c.losses}",
            _estimate(c) + (" ratio" if c.metric.kind == "ratio" else " diff."),
            fmt_p(c.p).removeprefix("p=") if c.p is not None else "–",
            fmt_p(c.wilcoxon.p).removeprefix("p=") if c.wilcoxon else "–",
        ]
        for c in comparisons
    ]


def terminal_report(r: ExperimentResults) -> list[Any]:
    """Rich renderables: per-arm table, paired per-problem table(s), all comparisons, the verdicts."""
    from rich.table import Table
    from rich.text import Text

    out: list[Any] = []
    t = Table(title=f"Arms ({r.samples} sample(s) x {len(r.problems)} problem(s) each)")
    for h in ARM_HEADERS:
        t.add_column(h, justify="left" if h in ("arm", "what differs") else "right")
    for row in arm_rows(r):
        t.add_row(*row)
    out.append(t)
    for c in r.primary:
        p = Table(title=f"{c.metric.label}: {c.arm_b} vs {c.arm_a}, paired by problem (mean over samples)")
        for h in ("problem", c.arm_a, c.arm_b, effect_header(c), "outcome"):
            p.add_column(h, justify="left" if h in ("problem", "outcome") else "right")
        for i, name in enumerate(c.problems):
            p.add_row(
                name,
                fmt_value(r.metric, c.a[i]),
                fmt_value(r.metric, c.b[i]),
                fmt_effect(c, c.effects[i]),
                fmt_outcome(c, c.effects[i]),
            )
        for name in c.missing:
            p.add_row(name, "–", "–", "–", "no value in one arm")
        out.append(p)
    s = Table(title="Paired comparisons (bootstrap CI over problems; exact tests for small n)")
    for h in COMPARE_HEADERS:
        s.add_column(h, justify="left" if h in ("metric", "arms") else "right")
    for row in compare_rows(r.primary + r.secondary):
        s.add_row(*row)
    out.append(s)
    for c in r.primary:
        colour = "green" if c.significant else "yellow"
        out.append(Text.assemble(("verdict: ", "bold"), (c.verdict, colour)))
        out.append(Text(f"  power: {c.power_note}", style="dim"))
    for n in r.notes:
        out.append(Text(f"note: {n}", style="yellow"))
    return out
