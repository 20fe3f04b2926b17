"""`ncu-agent report`: one self-contained HTML page per run directory, and one per batch.

The pages are rendered from `prompts/report/*.j2` with autoescaping on: every string from the store
(sources, prompts, replies, reasons) is escaped by the template, and only the plots (matplotlib SVG) and
the highlighted final kernel (pygments, which escapes its input) go in as markup. No scripts, no URLs.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from pydantic import BaseModel

from agent.data.paths import prompts_dir
from agent.prompt.gpus import UnknownGpuError, find_gpu
from agent.report import plots as report_plots
from agent.report.batch import BatchData, batch_run_dirs, load_batch
from agent.report.data import load_run_dir
from agent.report.models import CandidateRow, ProfileRow, RunDirData, Step

REPORT = "report.html"
NOT_TIMED = "not timed: no GPU (correctness only, in Triton's interpreter)"


class DiffLine(BaseModel):
    kind: str  # file, hunk, add, del, ctx
    text: str


class MetricRow(BaseModel):
    kernel: str
    launch: int
    metric: str
    parent: Any = None
    child: Any = None
    change: str = ""


class StepView(BaseModel):
    step: Step
    diff: list[DiffLine]
    added: int
    removed: int
    parent_profile: ProfileRow | None
    child_profile: ProfileRow | None
    metrics: list[MetricRow]


class StageView(BaseModel):
    run_id: int
    name: str
    candidates: list[CandidateRow]
    timeline_svg: str | None
    speedup_svg: str | None
    steps: list[StepView]


def source_diff(old: str, new: str, old_name: str, new_name: str) -> list[DiffLine]:
    """A unified diff, line by line with its kind (the first two lines name the files, so a removed line
    that starts with '--' is still a removal)."""
    kinds = {"@@": "hunk", "+": "add", "-": "del"}
    lines = difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=old_name, tofile=new_name, lineterm="", n=3
    )
    return [
        DiffLine(
            kind="file" if i < 2 else next((k for p, k in kinds.items() if line.startswith(p)), "ctx"),
            text=line,
        )
        for i, line in enumerate(lines)
    ]


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def metric_rows(parent: ProfileRow | None, child: ProfileRow | None) -> list[MetricRow]:
    """Parent and child metrics side by side: kernel by kernel, launch by launch, in the set's order."""
    pm, cm = (parent.metrics if parent else None) or {}, (child.metrics if child else None) or {}
    rows = []
    for kernel in dict.fromkeys([*pm, *cm]):
        pl, cl = pm.get(kernel, []), cm.get(kernel, [])
        for i in range(max(len(pl), len(cl))):
            p, c = (pl[i] if i < len(pl) else {}), (cl[i] if i < len(cl) else {})
            for metric in dict.fromkeys([*p, *c]):
                a, b = _number(p.get(metric)), _number(c.get(metric))
                change = ""
                if a is not None and b is not None:
                    change = f"{b - a:+.4g}" + (f" ({100 * (b - a) / abs(a):+.1f}%)" if a else "")
                rows.append(
                    MetricRow(
                        kernel=kernel,
                        launch=i,
                        metric=metric,
                        parent=p.get(metric),
                        child=c.get(metric),
                        change=change,
                    )
                )
    return rows


def step_view(step: Step) -> StepView:
    child_profile = step.child.profile
    parent_profile = (
        step.parent.profile_in(child_profile.metric_set if child_profile else None) if step.parent else None
    )
    diff = (
        source_diff(step.parent.source, step.child.source, f"#{step.parent.id}", f"#{step.child.id}")
        if step.parent
        else []
    )
    return StepView(
        step=step,
        diff=diff,
        added=sum(d.kind == "add" for d in diff),
        removed=sum(d.kind == "del" for d in diff),
        parent_profile=parent_profile,
        child_profile=child_profile,
        metrics=metric_rows(parent_profile, child_profile),
    )


def _peak_gbps(data: RunDirData) -> float | None:
    gpu = next((r.gpu for r in reversed(data.runs) if r.gpu), None)
    try:
        return find_gpu(gpu).memory_bandwidth_gbps if gpu else None
    except UnknownGpuError:
        return None


def _highlight(source: str) -> Markup:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return Markup(highlight(source, PythonLexer(), HtmlFormatter(cssclass="hl", linenos="table")))


@cache
def _highlight_css() -> str:
    from pygments.formatters import HtmlFormatter

    css = HtmlFormatter(style="friendly").get_style_defs(".hl")
    # pygments also styles bare `pre` and `td.linenos`: scope those to the kernel's block too.
    return "\n".join(line if line.startswith(".hl") else f".hl {line}" for line in css.splitlines())


def _fmt_ms(v: float | None) -> str:
    return f"{v:.3f} ms" if v is not None else "–"


def _fmt_x(v: float | None) -> str:
    return f"{v:.2f}×" if v is not None else "–"


def _fmt_pct(v: float | None) -> str:
    return f"{v:.1f}%" if v is not None else "–"


def _fmt_num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.4g}"
    return str(v)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(prompts_dir() / "report"),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ms=_fmt_ms, x=_fmt_x, pct=_fmt_pct, num=_fmt_num)
    env.globals.update(highlight_css=Markup(_highlight_css()))
    return env


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _incoming(data: RunDirData, cands: list[CandidateRow]) -> CandidateRow | None:
    """The best a stage started from: the last new best of its run made before its first candidate."""
    if not cands:
        return None
    before = [
        st.child for st in data.steps if st.child.run_id == cands[0].run_id and st.child.id < cands[0].id
    ]
    return before[-1] if before else None


def render_run(data: RunDirData, batch_link: str | None = None, run_base: str = "") -> str:
    """The run page; `run_base` leads from the page's folder to the run dir (for links to .ncu-rep files)."""
    stages = [
        StageView(
            run_id=s.run_id,
            name=s.name,
            candidates=s.candidates,
            timeline_svg=report_plots.timeline_svg(
                s.candidates, _incoming(data, s.candidates), key=f"{s.run_id}-{s.name}"
            ),
            speedup_svg=report_plots.speedup_svg(s.candidates, key=f"{s.run_id}-{s.name}"),
            steps=[step_view(st) for st in s.steps],
        )
        for s in data.stages
    ]
    best_kernels = [st.child for st in data.steps]
    if data.best is not None and data.best.id not in {c.id for c in best_kernels}:
        best_kernels.append(data.best)
    roofline = report_plots.roofline_svg(data.candidates, best_kernels, _peak_gbps(data), key="run")
    skipped = next((c.skipped_reason for c in data.candidates if c.skipped_reason), None)
    if skipped:
        not_timed = f"not timed: {skipped}"
    elif any(r.device == "cpu" for r in data.runs):
        not_timed = NOT_TIMED
    else:
        not_timed = "no timed candidate (yet)"
    return (
        environment()
        .get_template("run.html.j2")
        .render(
            data=data,
            stages=stages,
            roofline_svg=Markup(roofline) if roofline else None,
            final_kernel=_highlight(data.final_source) if data.final_source else None,
            not_timed=not_timed if not data.timed else None,
            batch_link=batch_link,
            run_base=run_base,
            generated=_now(),
        )
    )


def write_run_report(run_dir: Path, out: Path | None = None, batch_link: str | None = None) -> Path:
    out = out or run_dir / REPORT
    base = _rel(run_dir, out.parent)
    page = render_run(load_run_dir(run_dir), batch_link, "" if base == "." else f"{base}/")
    out.write_text(page, encoding="utf-8")
    return out


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def render_batch(data: BatchData, links: dict[Path, str]) -> str:
    return (
        environment()
        .get_template("batch.html.j2")
        .render(
            data=data,
            links=links,
            plot=report_plots.batch_svg(data.rows, key="batch"),
            geomean_eager=data.geomean("speedup_eager"),
            geomean_compiled=data.geomean("speedup_compiled"),
            generated=_now(),
        )
    )


def write_batch_report(
    batch_dir: Path, out: Path | None = None, on_page: Callable[[Path], None] | None = None
) -> tuple[Path, BatchData]:
    """Each problem's page in its run dir, then the batch page linking them (links relative to `out`)."""
    out = out or batch_dir / REPORT
    links = {}
    for run_dir in batch_run_dirs(batch_dir):
        page = write_run_report(run_dir, batch_link=_rel(out, run_dir))
        links[run_dir] = _rel(page, out.parent)
        if on_page is not None:
            on_page(run_dir)
    data = load_batch(batch_dir)
    out.write_text(render_batch(data, links), encoding="utf-8")
    return out, data
