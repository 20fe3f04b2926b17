"""What a batch page shows: one row per problem, read from each problem's run directory, merged with the
batch's own `summary.json` where there is one.

A batch directory holds run directories (each with records.sqlite), either directly or under
`problems/` (the layout `ncu-agent batch` writes: BATCH_DIR/problems/NAME/). `summary.json` is read
leniently, so the page survives changes to its shape: a `problems` list of objects with a `name` gives the
batch's verdict per problem (status, correct, reason) and its order, and lists problems that have no run
directory yet; every other key is shown as written (scalars as rows, lists of objects as tables).
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.report.data import is_run_dir, load_run_dir

SUMMARY_JSON = "summary.json"
PROBLEMS = "problems"


class BatchRow(BaseModel):
    """One problem of a batch, as its summary table shows it."""

    run_dir: Path
    problem: str
    status: str
    device: str | None = None
    gpu: str | None = None
    correct: bool = Field(default=False, description="An accepted best kernel (or the batch's own verdict).")
    reason: str = ""
    has_run: bool = True
    best_id: int | None = None
    start_ms: float | None = None
    best_ms: float | None = None
    eager_ms: float | None = None
    compiled_ms: float | None = None
    speedup_eager: float | None = None
    speedup_compiled: float | None = None
    pct_roofline: float | None = None
    evaluations: int = 0
    candidates: int = 0
    accepted: int = 0


class Block(BaseModel):
    """A piece of summary.json as a table: `columns` (empty: key/value rows) and rows of cells."""

    title: str
    columns: list[str] = Field(default_factory=list)
    rows: list[list[str]]


class BatchData(BaseModel):
    path: Path
    rows: list[BatchRow]
    summary: dict[str, Any] | None = Field(default=None, description=f"{SUMMARY_JSON}, as written.")
    blocks: list[Block] = Field(default_factory=list)

    def geomean(self, field: str) -> float | None:
        values = [getattr(r, field) for r in self.rows if r.correct and getattr(r, field)]
        return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def batch_run_dirs(path: Path) -> list[Path]:
    """The run directories of a batch directory: its subfolders, then those of `problems/`, by name."""
    found: list[Path] = []
    for base in (path, path / PROBLEMS):
        if base.is_dir():
            found += sorted(p for p in base.iterdir() if p.is_dir() and is_run_dir(p))
    return found


def is_batch_dir(path: Path) -> bool:
    return not is_run_dir(path) and bool(batch_run_dirs(path))


def batch_row(run_dir: Path) -> BatchRow:
    try:
        data = load_run_dir(run_dir)
    except (sqlite3.Error, ValueError) as e:
        return BatchRow(run_dir=run_dir, problem=run_dir.name, status="unreadable", reason=str(e))
    best, start = data.best, data.start
    return BatchRow(
        run_dir=run_dir,
        problem=data.problem,
        status=data.status,
        device=data.runs[-1].device if data.runs else None,
        gpu=data.runs[-1].gpu if data.runs else None,
        correct=best is not None and best.accepted,
        best_id=best.id if best else None,
        start_ms=start.median_ms if start else None,
        best_ms=best.median_ms if best else None,
        eager_ms=best.eager_ms if best else None,
        compiled_ms=best.compiled_ms if best else None,
        speedup_eager=best.speedup_eager if best else None,
        speedup_compiled=best.speedup_compiled if best else None,
        pct_roofline=best.pct_roofline if best else None,
        evaluations=data.evaluations,
        candidates=len(data.candidates),
        accepted=sum(c.accepted for c in data.candidates),
    )


def _text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict | list):
        return json.dumps(v, default=str)
    return "–" if v is None else str(v)


def _blocks(title: str, value: dict[str, Any]) -> list[Block]:
    """Scalars of `value` as key/value rows; lists of objects and objects of objects as tables."""
    scalars, blocks = [], []
    for key, v in value.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            cols = list(dict.fromkeys(k for x in v for k in x))
            blocks.append(Block(title=key, columns=cols, rows=[[_text(x.get(c)) for c in cols] for x in v]))
        elif isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            cols = list(dict.fromkeys(k for x in v.values() for k in x))
            rows = [[name, *(_text(x.get(c)) for c in cols)] for name, x in v.items()]
            blocks.append(Block(title=key, columns=["", *cols], rows=rows))
        elif isinstance(v, dict):
            blocks += _blocks(key, v)
        else:
            scalars.append([key, "; ".join(map(str, v)) if isinstance(v, list) else _text(v)])
    return ([Block(title=title, rows=scalars)] if scalars else []) + blocks


def _merge(path: Path, rows: dict[str, BatchRow], listed: list[Any]) -> list[BatchRow]:
    """The batch's own verdict per problem over what the run dirs say, in the batch's order."""
    out = []
    for entry in listed:
        if not isinstance(entry, dict) or "name" not in entry:
            continue
        name = str(entry["name"])
        row = rows.pop(name, None) or BatchRow(
            run_dir=path / PROBLEMS / name, problem=name, status="no run yet", has_run=False
        )
        row.status = str(entry.get("status") or row.status)
        row.correct = bool(entry.get("correct", row.correct))
        row.reason = str(entry.get("reason") or row.reason)
        out.append(row)
    return out + list(rows.values())


def load_batch(path: Path) -> BatchData:
    raw = json.loads((path / SUMMARY_JSON).read_text()) if (path / SUMMARY_JSON).is_file() else None
    summary = raw if isinstance(raw, dict) else ({"summary": raw} if raw is not None else None)
    rows = {d.name: batch_row(d) for d in batch_run_dirs(path)}
    listed = summary.get(PROBLEMS) if summary else None
    ordered = _merge(path, rows, listed) if isinstance(listed, list) else list(rows.values())
    rest = {k: v for k, v in (summary or {}).items() if k != PROBLEMS}
    return BatchData(path=path, rows=ordered, summary=summary, blocks=_blocks("batch", rest) if rest else [])
