"""One problem of a batch, in a process of its own: `python -m agent.batch.job BATCH_DIR NAME`.

The job runs the problem as `ncu-agent run` would (agent/commands/run_problem.py) in
`BATCH_DIR/problems/NAME/`, with three things around the loop: the GPU's lock around every evaluation and
ncu run, the batch's budgets, and, when an earlier job of this problem was killed, the continuation of its
run (ReplayStore: recorded evaluations and profiles are given back, not run again, and no record is written
twice).

A problem is done when `outcome.json` says how it ended and its run is finished in its store; the job
writes the first, then finishes the run, so a kill between the two only costs a replay.

SIGTERM (the batch's time limit passed while an evaluation was in flight) stops the job cleanly: the
evaluation's worker and any ncu run are killed, and the problem ends as `budget` with its best so far.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agent.batch.budget import JobBudget, worker_evaluations
from agent.batch.gpu_slots import GPU_ENV, host, job_lock
from agent.batch.hooks import FileReporter, evaluator_for, profiler_for
from agent.batch.inputs import BatchConfig, ProblemEntry
from agent.batch.key_channel import take_key
from agent.batch.outcome import (
    ATTEMPTS_FILE,
    PARENT_ENV,
    STOPPED,
    ProblemOutcome,
    finish,
    is_done,
    problem_dir,
    problem_lock,
    read_outcome,
)
from agent.batch.resume import ReplayStore
from agent.commands.run_problem import ProblemRun, RunEnd, run_one
from agent.commands.run_setup import NEEDS_LLM, RunPlan, RunSetupError, plan_run
from agent.evaluation.sandbox import die_with_parent
from agent.evaluation.torch_policy import merged
from agent.llm.client import BudgetExhausted
from agent.loop import LoopHooks
from agent.problem import ProblemError, load_problem
from agent.records import ProblemSpec
from agent.store import Store


class JobStopped(BaseException):
    """SIGTERM from the batch. A BaseException, so no `except Exception` on the way records it as a
    candidate's failure: it unwinds to `_run`, closing workers and ncu runs as it goes."""


def _stop(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the unwinding must not be interrupted again
    raise JobStopped(STOPPED)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_problem(
    batch_dir: Path, name: str, deadline: float | None = None, api_key: str | None = None
) -> ProblemOutcome:
    """Run (or continue) one problem of the batch; returns how it ended. Never two jobs of one problem."""
    batch_dir = Path(batch_dir)
    pdir = problem_dir(batch_dir, name)
    with problem_lock(pdir):
        if is_done(pdir):
            return read_outcome(pdir)  # type: ignore[return-value]
        with (pdir / ATTEMPTS_FILE).open("a") as f:
            f.write(json.dumps({"pid": os.getpid(), "host": host(), "gpu": os.environ.get(GPU_ENV)}) + "\n")
        return _run(batch_dir, pdir, name, deadline, api_key)


def _run(
    batch_dir: Path, pdir: Path, name: str, deadline: float | None, api_key: str | None
) -> ProblemOutcome:
    cfg = BatchConfig.load(batch_dir)
    entry = cfg.entry(name)
    base = ProblemOutcome(name=name, status="error", gpu=os.environ.get(GPU_ENV), host=host())
    budget = JobBudget(batch_dir, cfg.budget, deadline)
    store: Store = Store.open_dir(pdir)
    run_id = _unfinished_run(store)
    ready = _spec_and_plan(cfg, entry, base, budget, run_id, api_key)
    if isinstance(ready, ProblemOutcome):  # the problem ended before its run could start
        return finish(pdir, ready, store)
    spec, plan = ready
    if run_id is not None:
        store.close()
        store = ReplayStore(pdir / Store.FILENAME, run_id)
    lock = job_lock(batch_dir, name)
    reporter = FileReporter(pdir / "log.txt")
    outcome_record = _OutcomeRecord(pdir, base, store, reporter, _device())
    job = ProblemRun(
        plan,
        spec,
        spec.kernel_path,
        store,
        pdir,
        outcome_record.device,
        reporter,
        problem=str(entry.path),
        record={"batch": str(batch_dir.resolve())},
        run_id=run_id,
        hooks=lambda rid: LoopHooks(evaluator_for(store, rid, budget, lock), profiler_for(store, lock)),
        budget_errors=(BudgetExhausted, JobStopped),
        before_finish=outcome_record,
    )
    try:
        run_one(job)
    finally:
        store.close()
    return outcome_record.ended[0]


def _unfinished_run(store: Store) -> int | None:
    """The run an earlier job of this problem left running or killed (this job continues it), if any."""
    row = store.conn.execute(
        "SELECT id FROM runs WHERE status IN ('running', 'killed') ORDER BY id DESC"
    ).fetchone()
    return row["id"] if row else None


def _spec_and_plan(
    cfg: BatchConfig,
    entry: ProblemEntry,
    base: ProblemOutcome,
    budget: JobBudget,
    run_id: int | None,
    api_key: str | None,
) -> tuple[ProblemSpec, RunPlan] | ProblemOutcome:
    """The problem and its run's plan, or the outcome of a problem that cannot start: it does not load,
    needs the LLM that is off, has no valid plan, or would be a new run with the batch's budget spent."""
    try:
        spec = load_problem(entry.path)
        spec.allow_torch = merged(spec.allow_torch, cfg.run.allow_torch)
    except ProblemError as e:
        return base.model_copy(update={"reason": str(e), "run_id": run_id})
    if spec.kernel_path is None and not cfg.run.llm:
        return base.model_copy(update={"status": "skipped", "reason": NEEDS_LLM})
    try:
        plan = plan_run(cfg.run, api_key, has_kernel=spec.kernel_path is not None)
    except RunSetupError as e:
        return base.model_copy(update={"reason": str(e), "run_id": run_id})
    if run_id is None and (spent := budget.batch_spent()):
        return base.model_copy(update={"status": "skipped", "reason": spent})
    return spec, plan


@dataclass
class _OutcomeRecord:
    """Called as the run ends: writes outcome.json before the run's row (the module's docstring says why)."""

    pdir: Path
    base: ProblemOutcome
    store: Store
    reporter: FileReporter
    device: str
    ended: list[ProblemOutcome] = field(default_factory=list)

    def __call__(self, end: RunEnd) -> None:
        store = self.store
        first = end.outcome.first if end.outcome else None
        last = end.outcome.last if end.outcome else None
        result = self.base.model_copy(
            update={
                "status": end.status,
                "reason": end.reason,
                "run_id": end.run_id,
                "device": self.device,
                "start_id": first.start.cand_id if first else None,
                "best_id": last.best.cand_id if last else None,
                "evaluations": worker_evaluations(store.conn, end.run_id),
                "reused": store.reused if isinstance(store, ReplayStore) else 0,
            }
        )
        if result.reused:
            self.reporter.info(
                f"continued the run of a killed job: {result.reused} recorded evaluations reused"
            )
        self.ended.append(finish(self.pdir, result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.batch.job", description=__doc__)
    parser.add_argument("batch_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--deadline", type=float, default=None, help="Epoch seconds: the batch's time limit.")
    args = parser.parse_args(argv)
    api_key = take_key()  # first: the file is gone before any candidate runs
    parent = os.environ.get(PARENT_ENV)
    die_with_parent(int(parent) if parent else None)
    signal.signal(signal.SIGTERM, _stop)
    outcome = run_problem(args.batch_dir, args.name, args.deadline, api_key)
    print(outcome.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
