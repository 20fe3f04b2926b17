"""A batch's budgets: worker evaluations per problem, worker evaluations in all, and wall time.

A worker evaluation is an evaluation a worker process ran (the `device` of its result is set): stage-rule
rejections and replies without code cost nothing and do not count. The batch-wide count is a file under
`locks/` that every job increments, under a file lock, before it starts a worker; each invocation of the
batch first rebuilds it from the stores, which are the truth (an increment whose evaluation a kill cut
short is dropped that way). A spent budget raises inside the loop, which ends the stage as it does for an
LLM budget; the run is recorded as stopped by the budget, and problems not yet started are skipped.
"""

from __future__ import annotations

import fcntl
import sqlite3
import time
from pathlib import Path

from agent.batch.inputs import Budget
from agent.llm.client import BudgetExhausted

WORKER_EVALUATIONS = """SELECT COUNT(*) FROM evaluations e JOIN candidates c ON c.id = e.candidate_id
    WHERE json_extract(e.result, '$.device') != ''"""


class BatchBudgetExhausted(BudgetExhausted):
    """The whole batch's evaluations or wall time are spent."""


class ProblemBudgetExhausted(BudgetExhausted):
    """This problem's evaluations are spent."""


def worker_evaluations(conn: sqlite3.Connection, run_id: int | None = None) -> int:
    sql = WORKER_EVALUATIONS + (" AND c.run_id = ?" if run_id is not None else "")
    return int(conn.execute(sql, (run_id,) if run_id is not None else ()).fetchone()[0])


class BatchCounter:
    """Worker evaluations started by the whole batch, shared by its jobs through a locked file."""

    def __init__(self, batch_dir: Path):
        folder = Path(batch_dir) / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "evaluations.count"
        self.lock = folder / "evaluations.lock"

    def _locked(self, update: int | None, add: int, limit: int | None) -> int:
        with self.lock.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                text = self.path.read_text().strip() if self.path.exists() else ""
                value = int(text) if text else 0
                if update is not None:
                    value = update
                elif limit is not None and value + add > limit:
                    return -1
                else:
                    value += add
                self.path.write_text(str(value))
                return value
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def reset(self, value: int) -> None:
        self._locked(value, 0, None)

    def value(self) -> int:
        return self._locked(None, 0, None)

    def take(self, limit: int | None) -> bool:
        """Count one evaluation, unless that would pass `limit`."""
        return self._locked(None, 1, limit) >= 0


class JobBudget:
    """The budget checks of one problem's job, before each worker evaluation it would start."""

    def __init__(self, batch_dir: Path, budget: Budget, deadline: float | None):
        self.budget, self.deadline = budget, deadline
        self.counter = BatchCounter(batch_dir)

    def batch_spent(self) -> str | None:
        """Why the batch may start no more work, or None."""
        if self.deadline is not None and time.time() >= self.deadline:
            return f"the batch's time limit ({self.budget.time_limit_s:g} s) is spent"
        limit = self.budget.batch_evaluations
        if limit is not None and self.counter.value() >= limit:
            return f"the batch's budget of {limit} evaluations is spent"
        return None

    def take(self, conn: sqlite3.Connection, run_id: int) -> None:
        """Allow one more worker evaluation for this run, or raise the budget it would break."""
        per = self.budget.problem_evaluations
        if per is not None and worker_evaluations(conn, run_id) >= per:
            raise ProblemBudgetExhausted(f"the problem's budget of {per} evaluations is spent")
        reason = self.batch_spent()
        if reason is None and not self.counter.take(self.budget.batch_evaluations):
            reason = f"the batch's budget of {self.budget.batch_evaluations} evaluations is spent"
        if reason is not None:
            raise BatchBudgetExhausted(reason)
