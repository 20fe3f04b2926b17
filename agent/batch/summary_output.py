"""A batch's summary (agent/batch/summary.py) written out (summary.json, summary.csv, summary_overall.csv)
and shown (the terminal's tables)."""

from __future__ import annotations

import csv
from pathlib import Path

from rich.table import Table

from agent.batch.inputs import write_atomic
from agent.batch.summary import BatchSummary, ProblemRow
from agent.evaluation.torch_policy import describe as describe_policy


def _cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def write_summary(batch_dir: Path, summary: BatchSummary) -> list[Path]:
    """summary.json (everything), summary.csv (one row per problem), summary_overall.csv (metric rows)."""
    batch_dir = Path(batch_dir)
    out_json, out_csv, out_overall = (
        batch_dir / "summary.json",
        batch_dir / "summary.csv",
        batch_dir / "summary_overall.csv",
    )
    write_atomic(out_json, summary.model_dump_json(indent=1))
    fields = list(ProblemRow.model_fields)
    tmp = batch_dir / ".summary.csv.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for r in summary.problems:
            w.writerow([_cell(getattr(r, k)) for k in fields])
    tmp.replace(out_csv)
    o = summary.overall
    lines: list[tuple[str, str, object]] = [("problems", "", o.problems), ("correct", "", o.correct)]
    for fp in o.fast_p:
        lines += [(f"fast_{fp.p:g}", "eager", fp.eager), (f"fast_{fp.p:g}", "compile", fp.compile)]
    for b, g in o.geomean_speedup.items():
        lines += [("geomean_speedup", b, g.value), ("geomean_n", b, g.n)]
    lines += [
        ("evaluations", "", o.evaluations),
        ("wall_s", "", o.wall_s),
        ("evaluations_per_min", "", o.evaluations_per_min),
        ("tokens", "", o.tokens),
    ]
    tmp = batch_dir / ".summary_overall.csv.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "baseline", "value"])
        w.writerows([(m, b, _cell(v)) for m, b, v in lines])
    tmp.replace(out_overall)
    return [out_json, out_csv, out_overall]


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else "-"


def _frac(v: float | None, timed: bool = True) -> str:
    if v is None:
        return "not measured" if timed else "not timed"
    return f"{v:.2f}"


def summary_tables(summary: BatchSummary) -> tuple[Table, Table]:
    """Per problem, and overall (with a row per KernelBench level when there are levels)."""
    t = Table(title=f"batch {summary.batch_dir}")
    cols = ("problem", "status", "correct", "first correct", "best ms", "vs eager", "vs compile", "roofline")
    for col in (*cols, "evals", "torch ops"):
        t.add_column(col, justify="left" if col in ("problem", "status", "first correct") else "right")
    for r in summary.problems:
        t.add_row(
            r.name,
            r.status,
            "yes" if r.correct else "no",
            r.first_correct or "-",
            f"{r.best_ms:.4f}" if r.best_ms is not None else "-",
            _x(r.speedup_eager),
            _x(r.speedup_compile),
            f"{r.pct_roofline:.1f}%" if r.pct_roofline is not None else "-",
            str(r.evaluations),
            describe_policy(r.allow_torch),
        )
    o = summary.overall
    timed = any(r.speedup_eager is not None or r.speedup_compile is not None for r in summary.problems)
    t2 = Table(title=f"{o.correct} of {o.problems} problems correct")
    for col in ("metric", "vs eager", "vs torch.compile"):
        t2.add_column(col, justify="left" if col == "metric" else "right")
    for prefix, fps in [("", o.fast_p)] + [(f"{lv.level} ({lv.problems}) ", lv.fast_p) for lv in o.levels]:
        for fp in fps:
            t2.add_row(f"{prefix}fast_{fp.p:g}", _frac(fp.eager, timed), _frac(fp.compile, timed))
    g = o.geomean_speedup
    t2.add_row(
        "geomean speedup (correct)",
        f"{_x(g['eager'].value)} (n={g['eager'].n})" if timed else "not timed",
        f"{_x(g['compile'].value)} (n={g['compile'].n})" if timed else "not timed",
    )
    # Throughput is not a speedup: it goes under the table, not under the "vs" columns.
    rate = f", {o.evaluations_per_min:.1f} a minute" if o.evaluations_per_min is not None else ""
    t2.caption = f"{o.evaluations} evaluations in {o.wall_s / 60:.1f} min{rate}"
    return t, t2
