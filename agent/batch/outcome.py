"""How each problem of a batch ended, as the batch and its jobs share it: `BATCH_DIR/problems/NAME/`
holds `outcome.json` (ProblemOutcome) and `attempts.jsonl` (one line per job started), and a lock held by
whoever writes the problem's records (agent/batch/job.py runs a problem; agent/batch/driver.py schedules
them and records the end of those whose jobs never finished)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from agent.batch.gpu_slots import host
from agent.batch.inputs import write_atomic
from agent.store import Store

OUTCOME_FILE = "outcome.json"
ATTEMPTS_FILE = "attempts.jsonl"
PARENT_ENV = "NCU_AGENT_PARENT_PID"  # the job dies with the batch process that started it
STOPPED = "the batch's time limit passed during an evaluation: the job was stopped, that evaluation lost"

OutcomeStatus = Literal["done", "budget", "failed", "error", "skipped", "crashed"]


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
            row = store.conn.execute(
                "SELECT id FROM runs WHERE status IN ('running', 'killed') ORDER BY id DESC"
            ).fetchone()
            run_id = row["id"] if row else None
        try:
            outcome = ProblemOutcome(name=name, status=status, reason=reason, run_id=run_id)
            return finish(pdir, outcome, store)
        finally:
            if store is not None:
                store.close()
