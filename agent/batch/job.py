"""One problem of a batch, in a process of its own: `python -m agent.batch.job BATCH_DIR NAME`.

The job runs the problem as `ncu-agent run` would (agent/run_setup.py) in `BATCH_DIR/problems/NAME/`,
with three things around the loop: the GPU's lock around every evaluation and ncu run, the batch's
budgets, and, when an earlier job of this problem was killed, the continuation of its run (ReplayStore:
recorded evaluations and profiles are given back, not run again, and no record is written twice).

A problem is done when `outcome.json` says how it ended and its run is finished in its store; the job
writes the first, then finishes the run, so a kill between the two only costs a replay.

SIGTERM (the batch's time limit passed while an evaluation was in flight) stops the job cleanly: the
evaluation's worker and any ncu run are killed, and the problem ends as `budget` with its best so far.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from agent.batch.budget import JobBudget, worker_evaluations
from agent.batch.gpu_slots import GPU_ENV, host, job_lock
from agent.batch.hooks import FileReporter, evaluator_for, profiler_for
from agent.batch.inputs import BatchConfig, write_atomic
from agent.batch.resume import ReplayStore
from agent.evaluation.sandbox import die_with_parent
from agent.llm.client import BudgetExhausted
from agent.loop import LoopHooks
from agent.problem import ProblemError, load_problem
from agent.run_setup import ProblemRun, RunEnd, RunSetupError, plan_run, run_one
from agent.store import Store

OUTCOME_FILE = "outcome.json"
ATTEMPTS_FILE = "attempts.jsonl"
PARENT_ENV = "NCU_AGENT_PARENT_PID"
STOPPED = "the batch's time limit passed during an evaluation: the job was stopped, that evaluation lost"
NEEDS_LLM = "no starting Triton kernel: a first version needs the LLM (first stage)"

OutcomeStatus = Literal["done", "budget", "failed", "error", "skipped", "crashed"]


class JobStopped(BaseException):
    """SIGTERM from the batch. A BaseException, so no `except Exception` on the way records it as a
    candidate's failure: it unwinds to `_run`, closing workers and ncu runs as it goes."""


def _stop(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the unwinding must not be interrupted again
    raise JobStopped(STOPPED)


class ProblemOutcome(BaseModel):
    """How one problem of a batch ended."""

    name: str
    status: OutcomeStatus
    reason: str = ""
    run_id: int | None = None
    start_id: int | None = None  # the starting kernel's candidate
    best_id: int | None = None  # the best kernel's candidate (the loop's choice: faster beyond noise)
    evaluations: int = 0  # worker evaluations recorded in its run
    reused: int = 0  # recorded evaluations the last job gave back instead of running them again
    attempts: int = 0  # jobs started for it
    device: str | None = None
    gpu: str | None = None
    host: str = ""
    finished_at: str = ""


def problem_dir(batch_dir: Path, name: str) -> Path:
    return Path(batch_dir) / "problems" / name


def read_outcome(pdir: Path) -> ProblemOutcome | None:
    try:
        return ProblemOutcome.model_validate_json((pdir / OUTCOME_FILE).read_text())
    except (OSError, ValueError):
        return None


def run_status(pdir: Path, run_id: int) -> str | None:
    if not (pdir / Store.FILENAME).exists():
        return None
    store = Store.open_dir(pdir)
    try:
        row = store.conn.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
        return row["status"] if row else None
    finally:
        store.close()


def is_done(pdir: Path) -> bool:
    outcome = read_outcome(pdir)
    if outcome is None:
        return False
    return outcome.run_id is None or run_status(pdir, outcome.run_id) not in (None, "running")


def attempts(pdir: Path) -> int:
    path = pdir / ATTEMPTS_FILE
    return len(path.read_text().splitlines()) if path.exists() else 0


def finish(pdir: Path, outcome: ProblemOutcome, store: Store | None = None, note: str = "") -> ProblemOutcome:
    """Record how the problem ended: outcome.json first, then the run's row (see the module's docstring)."""
    outcome.attempts = max(outcome.attempts, attempts(pdir))
    outcome.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    outcome.host = outcome.host or host()
    pdir.mkdir(parents=True, exist_ok=True)
    write_atomic(pdir / OUTCOME_FILE, outcome.model_dump_json(indent=1))
    if store is not None and outcome.run_id is not None:
        store.finish_run(outcome.run_id, outcome.status, note or outcome.reason)
    return outcome


@contextlib.contextmanager
def problem_lock(pdir: Path) -> Iterator[None]:
    """Held by whoever writes the problem's records: one job at a time, or the batch recording its end."""
    pdir.mkdir(parents=True, exist_ok=True)
    with (pdir / ".job.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # a job of a killed batch may still be dying
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def record_end(batch_dir: Path, name: str, status: OutcomeStatus, reason: str) -> ProblemOutcome:
    """A problem that ends without a (further) job: skipped before it started, or its jobs kept dying."""
    pdir = problem_dir(batch_dir, name)
    with problem_lock(pdir):
        run_id, store = None, None
        if (pdir / Store.FILENAME).exists():
            store = Store.open_dir(pdir)
            row = store.conn.execute("SELECT id FROM runs WHERE status='running' ORDER BY id DESC").fetchone()
            run_id = row["id"] if row else None
        try:
            outcome = ProblemOutcome(name=name, status=status, reason=reason, run_id=run_id)
            return finish(pdir, outcome, store)
        finally:
            if store is not None:
                store.close()


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_problem(batch_dir: Path, name: str, deadline: float | None = None) -> ProblemOutcome:
    """Run (or continue) one problem of the batch; returns how it ended. Never two jobs of one problem."""
    batch_dir = Path(batch_dir)
    pdir = problem_dir(batch_dir, name)
    with problem_lock(pdir):
        if is_done(pdir):
            return read_outcome(pdir)  # type: ignore[return-value]
        with (pdir / ATTEMPTS_FILE).open("a") as f:
            f.write(json.dumps({"pid": os.getpid(), "host": host(), "gpu": os.environ.get(GPU_ENV)}) + "\n")
        return _run(batch_dir, pdir, name, deadline)


def _run(batch_dir: Path, pdir: Path, name: str, deadline: float | None) -> ProblemOutcome:
    cfg = BatchConfig.load(batch_dir)
    entry = cfg.entry(name)
    gpu = os.environ.get(GPU_ENV)
    base = ProblemOutcome(name=name, status="error", gpu=gpu, host=host())
    budget = JobBudget(batch_dir, cfg.budget, deadline)
    store: Store = Store.open_dir(pdir)
    row = store.conn.execute("SELECT id FROM runs WHERE status='running' ORDER BY id DESC").fetchone()
    run_id = row["id"] if row else None
    try:
        spec = load_problem(entry.path)
        plan = plan_run(cfg.run)
    except (ProblemError, RunSetupError) as e:
        return finish(pdir, base.model_copy(update={"reason": str(e), "run_id": run_id}), store)
    if spec.kernel_path is None:
        why = NEEDS_LLM
        if cfg.run.llm:
            why += "; writing a first version is not supported by `ncu-agent run` yet"
        return finish(pdir, base.model_copy(update={"status": "skipped", "reason": why}), store)
    if run_id is None and (spent := budget.batch_spent()):
        return finish(pdir, base.model_copy(update={"status": "skipped", "reason": spent}), store)
    if run_id is not None:
        store.close()
        store = ReplayStore(pdir / Store.FILENAME, run_id)
    lock = job_lock(batch_dir, name)
    reporter = FileReporter(pdir / "log.txt")
    ended: list[ProblemOutcome] = []

    def record(end: RunEnd) -> None:  # outcome.json before the run's row (the module's docstring says why)
        first = end.outcome.first if end.outcome else None
        last = end.outcome.last if end.outcome else None
        result = base.model_copy(
            update={
                "status": end.status,
                "reason": end.reason,
                "run_id": end.run_id,
                "device": device,
                "start_id": first.start.cand_id if first else None,
                "best_id": last.best.cand_id if last else None,
                "evaluations": worker_evaluations(store.conn, end.run_id),
                "reused": store.reused if isinstance(store, ReplayStore) else 0,
            }
        )
        if result.reused:
            reporter.info(f"continued the run of a killed job: {result.reused} recorded evaluations reused")
        ended.append(finish(pdir, result))

    device = _device()
    job = ProblemRun(
        plan,
        spec,
        spec.kernel_path,
        store,
        pdir,
        device,
        reporter,
        problem=str(entry.path),
        record={"batch": str(batch_dir.resolve())},
        run_id=run_id,
        hooks=lambda rid: LoopHooks(evaluator_for(store, rid, budget, lock), profiler_for(store, lock)),
        budget_errors=(BudgetExhausted, JobStopped),
        before_finish=record,
    )
    try:
        run_one(job)
    finally:
        store.close()
    return ended[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.batch.job", description=__doc__)
    parser.add_argument("batch_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--deadline", type=float, default=None, help="Epoch seconds: the batch's time limit.")
    args = parser.parse_args(argv)
    parent = os.environ.get(PARENT_ENV)
    die_with_parent(int(parent) if parent else None)
    signal.signal(signal.SIGTERM, _stop)
    outcome = run_problem(args.batch_dir, args.name, args.deadline)
    print(outcome.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
