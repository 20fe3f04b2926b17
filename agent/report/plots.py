"""The report's plots: matplotlib figures written as inline SVG text (no files, no scripts, no URLs).

Each function returns `None` when there is nothing to plot (a CPU run has no times); the page then says
why instead. SVG ids are prefixed per plot so several plots can share one page, and are stable run to run.
"""

from __future__ import annotations

import functools
import io
import itertools
import re
import statistics
from collections.abc import Callable, Sequence

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from agent.report.batch import BatchRow
from agent.report.models import CandidateRow

ACCEPTED, REJECTED, PENDING = "#2e7d32", "#c62828", "#9e9e9e"
BEST, EAGER, COMPILED, ROOF = "#f9a825", "#616161", "#1565c0", "#8e24aa"
# The star that marks a best kernel in every plot.
BEST_STAR: dict = {"marker": "*", "s": 170, "color": BEST, "edgecolor": "#5d4037", "lw": 0.6, "zorder": 4}
RC = {
    "svg.fonttype": "none",  # text stays text: smaller, selectable, searchable
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "legend.frameon": False,
    "svg.hashsalt": "ncu-agent",  # ids stable from run to run (made unique per plot by prefix_ids)
}


def prefix_ids(svg: str, prefix: str) -> str:
    """matplotlib numbers its element ids per figure (figure_1, axes_1...): prefix them, and the
    references to them, so that several plots on one page keep unique ids."""
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m[1]}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m[1]})", svg)
    return re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m[1]}"', svg)


def _plot(fn: Callable[..., str | None]) -> Callable[..., str | None]:
    """Draw under the report's style; `key` (unique on a page) prefixes the SVG's ids."""

    @functools.wraps(fn)
    def wrapper(*args, key: str, **kwargs) -> str | None:
        with matplotlib.rc_context(RC):
            svg = fn(*args, **kwargs)
        return prefix_ids(svg, re.sub(r"[^A-Za-z0-9_-]", "_", f"{fn.__name__}-{key}-")) if svg else None

    return wrapper


def svg_text(fig: Figure) -> str:
    """The figure as inline SVG (no XML header, no date: the same plot gives the same text)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "ncu-agent"})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _figure(width: float = 11.5, height: float = 3.6, ncols: int = 1, ratios=None) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.subplots(1, ncols, width_ratios=ratios, squeeze=False)
    return fig


def _iteration_marks(ax, cands: Sequence[CandidateRow]) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for a, b in itertools.pairwise(cands):
        if a.iteration != b.iteration:
            ax.axvline((a.id + b.id) / 2, color="#bdbdbd", lw=0.6, ls=":", zorder=0)


def _best_line(ax, cands: Sequence[CandidateRow], incoming: CandidateRow | None) -> None:
    """A star on each new best, and the best so far as a step line, from the best the stage started from
    (`incoming`: the previous stage's, when the stage has no starting kernel of its own)."""
    bests = [c for c in cands if c.new_best and c.median_ms is not None]
    xs = [c.id for c in bests]
    ys = [c.median_ms for c in bests]
    if incoming is not None and incoming.median_ms is not None:
        x0 = cands[0].id - 0.5  # just before the stage's first candidate
        xs, ys = [x0, *xs], [incoming.median_ms, *ys]
        ax.scatter(
            [x0],
            [incoming.median_ms],
            marker="*",
            s=120,
            color="#ffe082",
            edgecolor="#5d4037",
            lw=0.6,
            zorder=4,
            label="best of the previous stage",
        )
        ax.annotate(
            f"#{incoming.id}",
            (x0, incoming.median_ms),
            xytext=(-8, 6),
            textcoords="offset points",
            fontsize=8,
            color="#5d4037",
        )
    if not xs:
        return
    ax.step(
        [*xs, cands[-1].id], [*ys, ys[-1]], where="post", color=BEST, lw=1.4, zorder=2, label="best so far"
    )
    ax.scatter(
        [c.id for c in bests],
        [c.median_ms for c in bests],
        **BEST_STAR,
        label="new best",
    )
    for c in bests:
        ax.annotate(f"#{c.id}", (c.id, c.median_ms), xytext=(5, 6), textcoords="offset points", fontsize=8)


@_plot
def timeline_svg(cands: Sequence[CandidateRow], incoming: CandidateRow | None = None) -> str | None:
    """Median time of each candidate in the order made; rejected ones on the bottom edge."""
    timed = [c for c in cands if c.timed]
    if not timed:
        return None
    fig = _figure()
    ax = fig.axes[0]
    _iteration_marks(ax, cands)
    ids = [c.id for c in timed]
    for name, colour, style, value in (
        ("eager (same run)", EAGER, "--", lambda c: c.eager_ms),
        ("torch.compile (same run)", COMPILED, "--", lambda c: c.compiled_ms),
        ("roofline (measured floor)", ROOF, ":", lambda c: c.roofline_ms),
    ):
        points = [(c.id, value(c)) for c in timed if value(c) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), color=colour, ls=style, lw=1.2, label=name, zorder=1)
    ax.scatter(ids, [c.median_ms for c in timed], s=22, color=ACCEPTED, zorder=3, label="accepted")
    edge = blended_transform_factory(ax.transData, ax.transAxes)
    for label, colour, group in (
        ("rejected (no time)", REJECTED, [c for c in cands if c.status and not c.accepted]),
        ("not evaluated", PENDING, [c for c in cands if c.status is None]),
    ):
        if group:
            ax.scatter(
                [c.id for c in group],
                [0.03] * len(group),
                transform=edge,
                marker="x",
                s=28,
                color=colour,
                zorder=3,
                label=label,
                clip_on=False,
            )
    _best_line(ax, cands, incoming)
    top = max(max(c.median_ms, c.eager_ms or 0, c.compiled_ms or 0) for c in timed)  # type: ignore[type-var]
    ax.set_ylim(0, top * 1.12)
    ax.set_xlabel("candidate id (the order they were made; dotted lines: new iteration)")
    ax.set_ylabel("median time, ms (lower is better)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return svg_text(fig)


@_plot
def speedup_svg(cands: Sequence[CandidateRow]) -> str | None:
    """Each timed candidate's speedup over eager and over torch.compile, both measured in its own run."""
    timed = [c for c in cands if c.timed and (c.speedup_eager or c.speedup_compiled)]
    if not timed:
        return None
    fig = _figure(height=3.2)
    ax = fig.axes[0]
    _iteration_marks(ax, cands)
    for name, colour, marker, value in (
        ("vs eager", EAGER, "o", lambda c: c.speedup_eager),
        ("vs torch.compile", COMPILED, "s", lambda c: c.speedup_compiled),
    ):
        points = [(c.id, value(c)) for c in timed if value(c) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, color=colour, lw=0.8, alpha=0.6, zorder=1)
            ax.scatter(xs, ys, marker=marker, s=20, color=colour, zorder=3, label=name)
    ax.axhline(1.0, color="#424242", lw=0.9, zorder=1, label="1x (as fast as the baseline)")
    for c in timed:
        if c.new_best:
            for v in (c.speedup_eager, c.speedup_compiled):
                if v is not None:
                    ax.scatter([c.id], [v], **{**BEST_STAR, "s": 150})
    ax.set_ylim(0, max(max(c.speedup_eager or 0, c.speedup_compiled or 0) for c in timed) * 1.15)
    ax.set_xlabel("candidate id (stars: new best)")
    ax.set_ylabel("speedup (baseline ms / candidate ms)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return svg_text(fig)


@_plot
def roofline_svg(
    cands: Sequence[CandidateRow], steps: Sequence[CandidateRow], peak_gbps: float | None
) -> str | None:
    """Left: achieved bandwidth (bytes moved / median time) of each accepted kernel against the measured
    copy bandwidth, the memory roofline. Right: each best kernel's time against its roofline time."""
    accepted = [c for c in cands if c.accepted and c.achieved_gbps is not None]
    if not accepted:
        return None
    fig = _figure(height=3.8, ncols=2, ratios=[2.2, 1])
    ax, bx = fig.axes
    _bandwidth_panel(ax, accepted, peak_gbps)
    _roofline_time_panel(bx, [c for c in steps if c.median_ms is not None and c.roofline_ms is not None])
    return svg_text(fig)


def _bandwidth_panel(ax: Axes, accepted: list[CandidateRow], peak_gbps: float | None) -> None:
    """The roofline plot's left panel: each accepted kernel's achieved bandwidth, the best ones marked,
    against the measured copy bandwidth (the roofline) and the datasheet's peak."""
    copies = [c.copy_bandwidth_gbps for c in accepted if c.copy_bandwidth_gbps]
    copy = statistics.median(copies) if copies else None
    ax.scatter(
        [c.id for c in accepted],
        [c.achieved_gbps for c in accepted],
        s=22,
        color=ACCEPTED,
        zorder=3,
        label="accepted kernel",
    )
    marked = [c for c in accepted if c.new_best or c.final_best]
    ax.scatter(
        [c.id for c in marked],
        [c.achieved_gbps for c in marked],
        **BEST_STAR,
        label="best kernels",
    )
    for c in marked:
        pct = f"{c.pct_roofline:.0f}%" if c.pct_roofline is not None else ""
        ax.annotate(
            f"#{c.id} {pct}", (c.id, c.achieved_gbps), xytext=(5, -12), textcoords="offset points", fontsize=8
        )
    if copy:
        ax.axhline(
            copy, color=ROOF, ls=":", lw=1.4, label=f"measured copy bandwidth {copy:,.0f} GB/s (roofline)"
        )
        ax.secondary_yaxis(
            "right", functions=(lambda y: 100 * y / copy, lambda p: p * copy / 100)
        ).set_ylabel("% of copy bandwidth")
    if peak_gbps:
        ax.axhline(peak_gbps, color="#424242", ls="--", lw=1.0, label=f"datasheet peak {peak_gbps:,.0f} GB/s")
    ax.set_ylim(0, max(peak_gbps or 0, copy or 0, *(c.achieved_gbps or 0 for c in accepted)) * 1.1)
    ax.set_xlabel("candidate id")
    ax.set_ylabel("achieved bandwidth, GB/s")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("memory roofline: bytes moved / median time", fontsize=9)


def _roofline_time_panel(bx: Axes, best: list[CandidateRow]) -> None:
    """The roofline plot's right panel: each best kernel's measured time as a bar, its roofline time as a
    line across it."""
    rows = range(len(best))
    bx.barh(rows, [c.median_ms for c in best], color=ACCEPTED, height=0.5, label="measured", zorder=2)
    for i, c in enumerate(best):
        bx.vlines(
            c.roofline_ms,
            i - 0.38,
            i + 0.38,
            color=ROOF,
            lw=2.5,
            zorder=3,
            label="roofline time" if i == 0 else None,
        )
        bx.annotate(
            f"{c.median_ms:.3f} ms, {c.pct_roofline:.0f}% of roofline",
            (c.median_ms, i),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    bx.set_yticks(list(rows), [f"#{c.id}" for c in best])
    bx.set_ylim(len(best) - 0.4, -0.6)
    bx.set_xlim(0, max((c.median_ms for c in best), default=1.0) * 1.9)  # type: ignore[type-var]
    bx.set_xlabel("ms (bar: measured; line: roofline)")
    bx.set_title("best kernels, in order: time vs roofline time", fontsize=9)
    bx.grid(axis="y", visible=False)
    bx.legend(loc="lower right", fontsize=8)


@_plot
def batch_svg(rows: Sequence[BatchRow]) -> str | None:
    """Per problem: the best kernel's speedups over both baselines, and its % of roofline."""
    timed = [r for r in rows if r.best_ms is not None]
    if not timed:
        return None
    fig = _figure(height=1.2 + 0.42 * len(timed), ncols=2, ratios=[2, 1])
    ax, bx = fig.axes
    ys = range(len(timed))
    for offset, name, colour, value in (
        (-0.2, "vs eager", EAGER, lambda r: r.speedup_eager),
        (0.2, "vs torch.compile", COMPILED, lambda r: r.speedup_compiled),
    ):
        values = [value(r) or 0 for r in timed]
        ax.barh([y + offset for y in ys], values, height=0.38, color=colour, label=name, zorder=2)
        for y, v in zip(ys, values, strict=True):
            if v:
                ax.annotate(
                    f"{v:.2f}x",
                    (v, y + offset),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                )
    ax.axvline(1.0, color="#424242", lw=0.9, zorder=3)
    ax.set_yticks(list(ys), [r.problem for r in timed])
    ax.set_ylim(len(timed) - 0.5, -0.5)
    ax.set_xlim(0, max(max(r.speedup_eager or 0, r.speedup_compiled or 0) for r in timed) * 1.2 or 1)
    ax.set_xlabel("speedup of the best kernel (1 = as fast as the baseline)")
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower right", fontsize=8)
    pct = [r.pct_roofline or 0 for r in timed]
    bx.barh(list(ys), pct, height=0.5, color=ROOF, zorder=2)
    for y, v in zip(ys, pct, strict=True):
        bx.annotate(f"{v:.0f}%", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    bx.set_yticks(list(ys), [""] * len(timed))
    bx.set_ylim(len(timed) - 0.5, -0.5)
    bx.set_xlim(0, 115)
    bx.set_xlabel("% of roofline")
    bx.grid(axis="y", visible=False)
    return svg_text(fig)
