"""A batch's summary: one row per problem, and the numbers a paper quotes, as JSON and CSV.

Per problem, the speedups are those of the best kernel's own evaluation (candidate, eager and
torch.compile timed interleaved in one worker run), so each ratio comes from one run.

Overall, over ALL problems of the batch (a skipped or failed problem counts as not correct):
- fast_p (KernelBench): the fraction of problems whose best kernel is correct AND faster than the baseline
  by more than p: speedup > p. fast_0 is the fraction correct. Against eager and against torch.compile,
  for p in 0, 1, 1.5, 2. Where no problem has the speedup measured (a CPU batch: the interpreter is not
  timed), fast_p for p > 0 is None ("not measured"), never 0; a correct problem whose speedup is missing
  while others have one counts as not fast, and `unmeasured` says how many there were.
- the geometric mean of the speedups of the correct problems that have one (and how many those are).
- evaluations per minute: worker evaluations recorded in all the problems' runs, over the wall time of
  all the batch's invocations (resumes included; the minutes a killed batch lay dead are not counted).
- per level: the same fast_p for the problems of each KernelBench level folder (`level1`, `level2`...),
  when the inputs came from such folders; and per problem the iteration (and stage) of its first correct
  version (iteration 0: the starting kernel).
- a batch in which no problem could be attempted (every one skipped or failed before an evaluation) says
  so first (`nothing_attempted`), and `ncu-agent batch` exits 1.

The summary as files and as the terminal's tables: agent/batch/summary_output.py.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from pathlib import Path

from pydantic import BaseModel, Field

from agent.batch.budget import worker_evaluations
from agent.batch.gpu_slots import gpu_holds, overlaps
from agent.batch.inputs import BatchConfig, Invocations
from agent.batch.outcome import problem_dir, read_outcome
from agent.evaluation.torch_policy import describe as describe_policy
from agent.records import EvalResult
from agent.store import Store

P_VALUES = (0.0, 1.0, 1.5, 2.0)
BASELINES = ("eager", "compile")


class ProblemRow(BaseModel):
    name: str
    status: str  # an outcome status, or "pending" / "running" for a batch that has not ended
    correct: bool = False
    best_id: int | None = None
    best_ms: float | None = None
    eager_ms: float | None = None
    compile_ms: float | None = None
    speedup_eager: float | None = None
    speedup_compile: float | None = None
    pct_roofline: float | None = None
    start_ms: float | None = None
    evaluations: int = 0
    candidates: int = 0
    tokens: int = 0
    attempts: int = 0
    reused: int = 0
    device: str | None = None
    gpu: str | None = Field(default=None, description="The GPU its last job ran on (batch GPU id).")
    run_s: float | None = Field(
        default=None, description="Wall seconds of its last run, from start to finish (how jobs packed)."
    )
    reason: str = ""
    level: str | None = Field(default=None, description="The KernelBench level folder it came from.")
    allow_torch: list[str] = Field(
        default_factory=list,
        description="Torch ops its kernels were allowed to leave to PyTorch (agent.evaluation.torch_policy).",
    )
    first_correct: str | None = Field(
        default=None, description="'stage:iteration' of its first correct version (0: the starting kernel)."
    )


class FastP(BaseModel):
    p: float
    eager: float | None
    compile: float | None


class Geomean(BaseModel):
    value: float | None
    n: int = Field(description="Correct problems with this speedup measured (the mean is over them).")


class LevelRow(BaseModel):
    level: str
    problems: int
    correct: int
    fast_p: list[FastP]


class Overall(BaseModel):
    nothing_attempted: str | None = Field(
        default=None, description="Why no problem could be attempted; None when at least one was."
    )
    levels: list[LevelRow] = Field(default_factory=list)
    problems: int
    correct: int
    by_status: dict[str, int]
    undecided: int = Field(
        default=0,
        description="Problems whose outcome is 'undecided' (the CPU cannot decide; counted as not correct).",
    )
    fast_p: list[FastP]
    unmeasured: dict[str, int] = Field(description="Per baseline: correct problems without a speedup.")
    geomean_speedup: dict[str, Geomean]
    evaluations: int
    wall_s: float
    evaluations_per_min: float | None
    tokens: int
    gpu_holds: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Per host/GPU: holds of its lock by evaluations and by ncu runs."
    )
    gpu_overlaps: list[str] = Field(
        default_factory=list, description="Holds of one GPU's lock that overlapped in time (none expected)."
    )
    notes: list[str] = []


class BatchSummary(BaseModel):
    batch_dir: str
    problems: list[ProblemRow]
    overall: Overall


def fast_p(rows: list[ProblemRow], p: float, baseline: str) -> float | None:
    """KernelBench's fast_p over all rows; None for p > 0 when no row has this speedup measured."""
    if not rows:
        return None
    if p == 0:
        return sum(r.correct for r in rows) / len(rows)
    speedups = [getattr(r, f"speedup_{baseline}") for r in rows]
    if all(s is None for s in speedups):
        return None
    return sum(1 for r, s in zip(rows, speedups, strict=True) if r.correct and s is not None and s > p) / len(
        rows
    )


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _tokens(conn: sqlite3.Connection, run_id: int) -> int:
    total = 0
    for (usage,) in conn.execute(
        "SELECT r.usage FROM replies r JOIN prompts p ON p.id = r.prompt_id WHERE p.run_id=?", (run_id,)
    ):
        u = json.loads(usage) if usage else {}
        total += int(u.get("prompt_tokens") or 0) + int(u.get("completion_tokens") or 0)
    return total


def _result(conn: sqlite3.Connection, cand_id: int | None) -> EvalResult | None:
    if cand_id is None:
        return None
    row = conn.execute(
        "SELECT result FROM evaluations WHERE candidate_id=? ORDER BY id DESC LIMIT 1", (cand_id,)
    ).fetchone()
    return EvalResult.model_validate_json(row[0]) if row else None


def _seconds_between(start: str | None, end: str | None) -> float | None:
    from datetime import datetime

    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _first_correct(conn: sqlite3.Connection, run_id: int) -> str | None:
    row = conn.execute(
        "SELECT c.stage, c.iteration FROM candidates c JOIN evaluations e ON e.candidate_id = c.id "
        "WHERE c.run_id=? AND e.status='accepted' ORDER BY c.id LIMIT 1",
        (run_id,),
    ).fetchone()
    return f"{row[0]}:{row[1]}" if row else None


_LEVEL = re.compile(r"^level\d+$", re.I)


def level_of(path: Path) -> str | None:
    """`level1` for a file (or folder) inside a KernelBench level folder; None elsewhere."""
    return next((p.name for p in Path(path).parents if _LEVEL.match(p.name)), None)


def fast_ps(rows: list[ProblemRow]) -> list[FastP]:
    return [FastP(p=p, eager=fast_p(rows, p, "eager"), compile=fast_p(rows, p, "compile")) for p in P_VALUES]


def problem_row(batch_dir: Path, name: str) -> ProblemRow:
    pdir = problem_dir(batch_dir, name)
    outcome = read_outcome(pdir)
    has_store = (pdir / Store.FILENAME).exists()
    row = ProblemRow(name=name, status=outcome.status if outcome else "running" if has_store else "pending")
    if outcome is not None:
        row.reason, row.attempts, row.reused = outcome.reason, outcome.attempts, outcome.reused
        row.gpu = outcome.gpu
    if not has_store:
        return row
    store = Store.open_dir(pdir)
    try:
        run_id = outcome.run_id if outcome and outcome.run_id else None
        if run_id is None:
            last = store.conn.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 1").fetchone()
            run_id = last[0] if last else None
        if run_id is None:
            return row
        row.device, started, finished = store.conn.execute(
            "SELECT device, started_at, finished_at FROM runs WHERE id=?", (run_id,)
        ).fetchone()
        row.run_s = _seconds_between(started, finished)
        row.evaluations = worker_evaluations(store.conn, run_id)
        row.candidates = store.conn.execute(
            "SELECT COUNT(*) FROM candidates WHERE run_id=?", (run_id,)
        ).fetchone()[0]
        row.tokens = _tokens(store.conn, run_id)
        row.first_correct = _first_correct(store.conn, run_id)
        if outcome is None:
            return row
        best = _result(store.conn, outcome.best_id)
        start = _result(store.conn, outcome.start_id)
        row.best_id = outcome.best_id
        row.correct = outcome.status in ("done", "budget") and best is not None and best.accepted
        judged = best or start
        row.allow_torch = list(judged.allow_torch) if judged is not None else []
        if start is not None and start.timings and start.timings.candidate:
            row.start_ms = start.timings.candidate.median_ms
        t = best.timings if best is not None else None
        if t is not None and t.candidate is not None:
            row.best_ms = t.candidate.median_ms
            row.eager_ms = t.eager.median_ms if t.eager else None
            row.compile_ms = t.compiled.median_ms if t.compiled else None
            row.speedup_eager, row.speedup_compile = t.speedup_eager, t.speedup_compiled
            row.pct_roofline = t.pct_roofline
        return row
    finally:
        store.close()


def unmeasured_note(rows: list[ProblemRow]) -> str | None:
    """Why no speedup is in the summary, when none is: where it ran decides (the interpreter is never
    timed; a GPU batch times correct kernels only, so a GPU batch whose evaluations all failed has none)."""
    if any(r.speedup_eager is not None or r.speedup_compile is not None for r in rows):
        return None
    on_gpu = any(r.device not in (None, "cpu") for r in rows)
    why = (
        "no problem reached a correct, timed kernel"
        if on_gpu
        else "a CPU batch: the interpreter is not timed"
    )
    return f"no speedup was measured ({why}): fast_p for p > 0 and the geometric means are not measured"


def summarize(batch_dir: Path) -> BatchSummary:
    batch_dir = Path(batch_dir)
    cfg = BatchConfig.load(batch_dir)
    rows = [problem_row(batch_dir, p.name) for p in cfg.problems]
    for r, p in zip(rows, cfg.problems, strict=True):
        r.level = level_of(p.path)
        r.allow_torch = r.allow_torch or list(cfg.run.allow_torch)
    wall = Invocations.load(batch_dir).wall_s
    evaluations = sum(r.evaluations for r in rows)
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    unmeasured = {
        b: sum(1 for r in rows if r.correct and getattr(r, f"speedup_{b}") is None) for b in BASELINES
    }
    notes = []
    note = unmeasured_note(rows)
    if note:
        notes.append(note)
    policies = sorted({describe_policy(r.allow_torch) for r in rows})
    if policies != ["strict"]:
        notes.append(f"torch ops allowed outside the Triton kernels: {'; '.join(policies)}")
    unfinished = by_status.get("pending", 0) + by_status.get("running", 0)
    if unfinished:
        notes.append(f"{unfinished} problems have not finished: resume the batch to finish them")
    levels = sorted({r.level for r in rows if r.level})
    overall = Overall(
        nothing_attempted=_nothing_attempted(rows, unfinished),
        levels=[
            LevelRow(level=lv, problems=len(sub), correct=sum(r.correct for r in sub), fast_p=fast_ps(sub))
            for lv in levels
            for sub in [[r for r in rows if r.level == lv]]
        ],
        problems=len(rows),
        correct=sum(r.correct for r in rows),
        by_status=by_status,
        undecided=by_status.get("undecided", 0),
        fast_p=fast_ps(rows),
        unmeasured=unmeasured,
        geomean_speedup={
            b: Geomean(
                value=geomean([getattr(r, f"speedup_{b}") for r in rows if r.correct]),
                n=sum(1 for r in rows if r.correct and getattr(r, f"speedup_{b}") is not None),
            )
            for b in BASELINES
        },
        evaluations=evaluations,
        wall_s=wall,
        evaluations_per_min=evaluations / (wall / 60) if wall > 0 else None,
        tokens=sum(r.tokens for r in rows),
        gpu_holds=gpu_holds(batch_dir),
        gpu_overlaps=overlaps(batch_dir),
        notes=notes,
    )
    return BatchSummary(batch_dir=str(batch_dir), problems=rows, overall=overall)


def _nothing_attempted(rows: list[ProblemRow], unfinished: int) -> str | None:
    if unfinished or any(r.evaluations or r.candidates for r in rows):
        return None
    reasons = sorted({r.reason for r in rows if r.reason})
    return f"nothing could be attempted: {len(rows)} problems, none evaluated" + (
        f" ({'; '.join(reasons[:3])})" if reasons else ""
    )
