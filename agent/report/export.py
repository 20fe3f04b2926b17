"""`ncu-agent export` and `ncu-agent diff`: candidates as flat rows (CSV / JSON), and two candidates compared.

Export rows are flat on purpose (one column per value, ncu metrics as `ncu.KERNEL.LAUNCH.METRIC`) so a
spreadsheet or pandas reads them without knowing the store's schema.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from agent.report.batch import BatchData, batch_run_dirs
from agent.report.data import is_run_dir, load_run_dir
from agent.report.models import CandidateRow, RunDirData


def _r(v: float | None, digits: int = 6) -> float | None:
    return round(v, digits) if v is not None else None


def candidate_row(c: CandidateRow, problem: str, include_source: bool = False) -> dict[str, Any]:
    """One candidate, its latest evaluation and its latest profile's metrics, flattened."""
    t = c.result.timings if c.result else None
    stats = t.candidate if t else None
    prof = c.profile
    row: dict[str, Any] = {
        "problem": problem,
        "run_id": c.run_id,
        "candidate_id": c.id,
        "stage": c.stage,
        "iteration": c.iteration,
        "proposer": c.proposer,
        "label": c.label,
        "parent_id": c.parent_id,
        "created_at": c.created_at,
        "status": c.status,
        "reason": c.reason,
        "rule": c.rule,
        "new_best": c.new_best,
        "final_best": c.final_best,
        "median_ms": _r(c.median_ms),
        "iqr_ms": _r(stats.iqr_ms) if stats else None,
        "timing_reps": stats.n if stats else None,
        "eager_ms": _r(c.eager_ms),
        "compiled_ms": _r(c.compiled_ms),
        "speedup_eager": _r(c.speedup_eager, 4),
        "speedup_compiled": _r(c.speedup_compiled, 4),
        "roofline_ms": _r(c.roofline_ms),
        "pct_roofline": _r(c.pct_roofline, 3),
        "bytes_moved": t.bytes_moved if t else None,
        "copy_bandwidth_gbps": _r(c.copy_bandwidth_gbps, 2),
        "achieved_gbps": _r(c.achieved_gbps, 2),
        "timing_skipped": c.skipped_reason,
        "device": c.result.device if c.result else None,
        "eval_wall_s": _r(c.result.wall_s, 3) if c.result else None,
        "max_abs_err": c.result.max_abs_err if c.result else None,
        "chosen_configs": json.dumps(c.result.chosen_configs)
        if c.result and c.result.chosen_configs
        else None,
        "profile_ok": prof.ok if prof else None,
        "profile_error": prof.error if prof else None,
        "metric_set": prof.metric_set if prof else None,
        "ncu_report": prof.report_path if prof else None,
    }
    for kernel, launches in ((prof.metrics if prof else None) or {}).items():
        for i, launch in enumerate(launches):
            for metric, value in launch.items():
                row[f"ncu.{kernel}.{i}.{metric}"] = value
    if include_source:
        row["source"] = c.source
    return row


def export_rows(path: Path, include_source: bool = False) -> list[dict[str, Any]]:
    """Rows of a run directory, or of every run directory of a batch (with a `run_dir` column first)."""
    if is_run_dir(path):
        data = load_run_dir(path)
        return [candidate_row(c, data.problem, include_source) for c in data.candidates]
    rows = []
    for run_dir in batch_run_dirs(path):
        name = run_dir.relative_to(path).as_posix()
        rows += [{"run_dir": name} | r for r in export_rows(run_dir, include_source)]
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=str) + "\n"


def find_candidate(data: RunDirData, cand_id: int) -> CandidateRow:
    for c in data.candidates:
        if c.id == cand_id:
            return c
    known = ", ".join(str(c.id) for c in data.candidates) or "none"
    raise KeyError(f"no candidate {cand_id} in {data.path} (candidates: {known})")


def diff_text(a: CandidateRow, b: CandidateRow, context: int = 3) -> str:
    lines = difflib.unified_diff(
        a.source.splitlines(),
        b.source.splitlines(),
        f"#{a.id} {a.name}",
        f"#{b.id} {b.name}",
        n=context,
        lineterm="",
    )
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def compare_table(a: CandidateRow, b: CandidateRow) -> Table:
    """Two candidates' evaluations (and profile metrics) side by side; rows that differ in bold."""
    ra, rb = candidate_row(a, ""), candidate_row(b, "")
    skip = {"problem", "candidate_id", "created_at", "ncu_report"}
    table = Table(title=f"#{a.id} vs #{b.id}")
    table.add_column("field", overflow="fold")
    table.add_column(f"#{a.id}", justify="right", overflow="fold", max_width=44)
    table.add_column(f"#{b.id}", justify="right", overflow="fold", max_width=44)
    for key in dict.fromkeys([*ra, *rb]):
        if key in skip:
            continue
        va, vb = _cell(ra.get(key)), _cell(rb.get(key))
        if va == vb == "-":
            continue
        table.add_row(key.removeprefix("ncu."), va[:200], vb[:200], style="bold" if va != vb else "dim")
    return table


def batch_table(data: BatchData) -> Table:
    """The batch page's summary table, for the terminal."""
    table = Table(title=f"batch {data.path.name}")
    for name in ("problem", "status", "correct", "best ms", "vs eager", "vs compile", "roofline", "evals"):
        table.add_column(name, justify="left" if name in ("problem", "status", "correct") else "right")
    for r in data.rows:
        table.add_row(
            r.problem,
            r.status,
            "yes" if r.correct else "no",
            f"{r.best_ms:.3f}" if r.best_ms is not None else "-",
            f"{r.speedup_eager:.2f}x" if r.speedup_eager is not None else "-",
            f"{r.speedup_compiled:.2f}x" if r.speedup_compiled is not None else "-",
            f"{r.pct_roofline:.1f}%" if r.pct_roofline is not None else "-",
            str(r.evaluations),
            style="green" if r.correct else "red",
        )
    return table
