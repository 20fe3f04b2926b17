"""Batches: many problems through the same pipeline, on every GPU, resumable after any kill.

    BATCH_DIR/batch.json          what to run: problems, filters, run options, budgets, where
    BATCH_DIR/invocations.json    each `batch` / `batch --resume` invocation: start, last heartbeat
    BATCH_DIR/problems/NAME/      a run directory, as `ncu-agent run` makes (records.sqlite,
                                  best_kernel.py, profiles/), plus outcome.json, log.txt, job.log
    BATCH_DIR/locks/              per-GPU locks and their logs, the batch's evaluation counter
    BATCH_DIR/summary.json, summary.csv, summary_overall.csv

`run_batch` starts a job (agent/batch/job.py) for each problem not done yet, through a backend
(agent/batch/backends.py), then writes the summary (agent/batch/summary.py, summary_output.py). A job
that dies without finishing its problem is started again, up to `max_attempts` times per invocation,
then recorded as crashed. Resume is `run_batch` again on the same directory: done problems are skipped,
unfinished ones continue their run (agent/batch/resume.py), and nothing is recorded twice.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.batch.backends import run_local, run_ray
from agent.batch.budget import BatchCounter, JobBudget, worker_evaluations
from agent.batch.gpu_slots import Slots, host, visible_gpus
from agent.batch.inputs import BatchConfig, Execution, Invocation, Invocations
from agent.batch.outcome import (
    STOPPED,
    attempts,
    is_done,
    problem_dir,
    read_outcome,
    record_end,
)
from agent.batch.summary import BatchSummary, summarize
from agent.batch.summary_output import write_summary
from agent.store import Store

HEARTBEAT_S = 5.0


def create_batch(batch_dir: Path, config: BatchConfig) -> None:
    """A new batch directory; refuses one that already holds a batch (use resume)."""
    batch_dir = Path(batch_dir)
    if (batch_dir / "batch.json").exists():
        raise FileExistsError(f"{batch_dir} already holds a batch: resume it with --resume {batch_dir}")
    (batch_dir / "problems").mkdir(parents=True, exist_ok=True)
    config.save(batch_dir)


def interim_summary(batch_dir: Path, log: Callable[[str], None]) -> None:
    """The summary so far, after each problem ends: a batch killed later still leaves one. Best effort: a
    store being written by a running job may be busy, and the final summary is written anyway."""
    try:
        write_summary(batch_dir, summarize(batch_dir))
    except (sqlite3.Error, OSError) as e:
        log(f"the summary so far could not be written ({type(e).__name__}: {e}); the final one will be")


def recorded_evaluations(batch_dir: Path, names: list[str]) -> int:
    total = 0
    for name in names:
        path = problem_dir(batch_dir, name) / Store.FILENAME
        if path.exists():
            store = Store(path)
            try:
                total += worker_evaluations(store.conn)
            finally:
                store.close()
    return total


def _start_invocation(
    batch_dir: Path, exe: Execution, gpus: list[str], jobs: int
) -> tuple[Invocations, Invocation]:
    """This invocation, added to the batch's history (its heartbeat keeps `last_seen` current)."""
    history = Invocations.load(batch_dir)
    now = time.time()
    me = Invocation(
        started=now, last_seen=now, pid=os.getpid(), host=host(), backend=exe.backend, jobs=jobs, gpus=gpus
    )
    history.items.append(me)
    history.save(batch_dir)
    return history, me


def _deadline(cfg: BatchConfig, history: Invocations, me: Invocation) -> float | None:
    """When this invocation must stop: the time limit covers the whole batch, so the earlier invocations'
    wall time is spent already."""
    if cfg.budget.time_limit_s is None:
        return None
    return me.started + cfg.budget.time_limit_s - (history.wall_s - me.wall_s)


@dataclass
class _JobEvents:
    """What the driver does when a backend starts a job, sees one exit, or waits (the heartbeat)."""

    batch_dir: Path
    cfg: BatchConfig
    budget: JobBudget
    history: Invocations
    me: Invocation
    log: Callable[[str], None]
    started: dict[str, int] = field(default_factory=dict)  # jobs started per problem, this invocation

    def __post_init__(self) -> None:
        self.last_beat = self.me.started

    def tick(self) -> None:
        if time.time() - self.last_beat >= HEARTBEAT_S:
            self.last_beat = self.me.last_seen = time.time()
            self.history.save(self.batch_dir)

    def on_start(self, name: str, gpu: str | None) -> bool:
        fresh = not (problem_dir(self.batch_dir, name) / Store.FILENAME).exists()
        reason = self.budget.batch_spent() if fresh else None
        if reason:  # not started yet, and the batch's budget is spent: skipped without a job
            record_end(self.batch_dir, name, "skipped", reason)
            self.log(f"skip {name}: {reason}")
            return False
        self.started[name] = self.started.get(name, 0) + 1
        where = "the CPU" if gpu is None else "Ray" if gpu == "ray" else f"GPU {gpu}"
        self.log(f"start {name} on {where}")
        return True

    def on_exit(self, name: str, rc: int) -> bool:
        batch_dir, log = self.batch_dir, self.log
        pdir = problem_dir(batch_dir, name)
        if is_done(pdir):
            outcome = read_outcome(pdir)
            assert outcome is not None
            log(f"end {name}: {outcome.status} ({outcome.evaluations} evaluations) {outcome.reason}")
            interim_summary(batch_dir, log)
            return False
        if spent := self.budget.batch_spent():  # stopped at the time limit: no second job
            record_end(batch_dir, name, "budget", f"{spent}; {STOPPED}")
            log(f"end {name}: budget (its job was stopped at the time limit)")
            interim_summary(batch_dir, log)
            return False
        if self.started.get(name, 0) < self.cfg.max_attempts:
            log(f"the job of {name} died (exit {rc}); starting it again")
            return True
        record_end(batch_dir, name, "crashed", f"its job died {attempts(pdir)} times (last exit code {rc})")
        log(f"end {name}: crashed")
        return False


def run_batch(
    batch_dir: Path,
    execution: Execution | None = None,
    log: Callable[[str], None] = lambda message: None,
    api_key: str | None = None,
) -> BatchSummary:
    """Run (or resume) the batch in `batch_dir` to its end; returns the summary, also written as files.
    `api_key`: the LLM's key, handed to each job without showing it (agent/batch/key_channel.py)."""
    batch_dir = Path(batch_dir)
    cfg = BatchConfig.load(batch_dir)
    exe = execution or cfg.execution
    names = [p.name for p in cfg.problems]
    gpus = exe.gpus if exe.gpus is not None else visible_gpus()
    jobs = exe.jobs or max(1, len(gpus))

    history, me = _start_invocation(batch_dir, exe, gpus, jobs)
    deadline = _deadline(cfg, history, me)
    BatchCounter(batch_dir).reset(recorded_evaluations(batch_dir, names))
    budget = JobBudget(batch_dir, cfg.budget, deadline)

    todo = [n for n in names if not is_done(problem_dir(batch_dir, n))]
    log(f"{len(names) - len(todo)} of {len(names)} problems done already; {len(todo)} to run")
    ev = _JobEvents(batch_dir, cfg, budget, history, me, log)
    try:
        if exe.backend == "ray":
            run_ray(batch_dir, todo, exe.address, deadline, ev.on_exit, ev.tick, ev.on_start, api_key)
        else:
            slots = Slots(gpus, jobs)
            run_local(batch_dir, todo, slots, deadline, ev.on_exit, ev.tick, ev.on_start, api_key)
    finally:
        me.last_seen = time.time()
        history.save(batch_dir)
    summary = summarize(batch_dir)
    write_summary(batch_dir, summary)
    return summary
