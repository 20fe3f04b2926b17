"""What a batch job puts around the loop: the evaluator and profiler it calls, and where its progress goes.

`evaluator_for`: an evaluation the continued run already recorded for the same source is given back (no
worker); otherwise the problem's and the batch's budgets are checked, and the worker runs holding the GPU's
lock. `profiler_for`: a step whose profiles were all recorded is given back (no ncu); otherwise ncu runs
holding the GPU's lock.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.batch.budget import JobBudget
from agent.batch.gpu_slots import GpuLock
from agent.batch.resume import ReplayStore
from agent.evaluation.evaluate import evaluate
from agent.loop import LoopHooks
from agent.profiling.ncu import ProfileProvenance, ProfileResult, profile_candidates
from agent.records import EvalResult
from agent.store import Store


class FileReporter:
    """The loop's progress as lines in the problem's `log.txt`."""

    def __init__(self, path: Path):
        self.path = path

    def info(self, message: str) -> None:
        with self.path.open("a") as f:
            f.write(f"{datetime.now():%H:%M:%S} {message}\n")

    def begin(self, what: str, total: int) -> None:
        self.info(f"{what}: {total} to evaluate")

    def candidate(self, cand_id: int, label: str, result: EvalResult, best_ms: float | None) -> None:
        t = result.timings
        timing = f"{t.candidate.median_ms:.4f} ms" if t and t.candidate else "not timed"
        self.info(f"#{cand_id} {label}: {result.status.value} ({timing}) {result.reason[:120]}")

    def end(self) -> None:
        pass


def evaluator_for(
    store: Store, run_id: int, budget: JobBudget | None, lock: GpuLock | None
) -> Callable[..., Any]:
    """`budget` None: no budget but the run's own (a resumed `ncu-agent run`)."""

    def evaluator(problem: Any, source: str, device: str | None = None, **kw: Any) -> EvalResult:
        if isinstance(store, ReplayStore):
            recorded = store.recorded_evaluation(source)
            if recorded is not None:
                return recorded
        if budget is not None:
            budget.take(store.conn, run_id)
        with lock.hold("evaluate") if lock else contextlib.nullcontext():
            return evaluate(problem, source, device, **kw)

    return evaluator


def profiler_for(store: Store, lock: GpuLock | None) -> Callable[..., list[Any]]:
    def profiler(problem: Any, candidates: list[Any], metric_set: Any, out_dir: Any, **kw: Any) -> list[Any]:
        name = metric_set if isinstance(metric_set, str) else metric_set.name
        if isinstance(store, ReplayStore):
            rows = store.recorded_profiles([c.source for c in candidates], name)
            if rows is not None:
                return [
                    ProfileResult(
                        index=i,
                        ok=bool(r["ok"]),
                        error=r["error"],
                        report_path=Path(r["report_path"]) if r["report_path"] else None,
                        metrics=json.loads(r["metrics"]) if r["metrics"] else {},
                        rules=json.loads(r["rules"]) if r["rules"] else [],
                        provenance=ProfileProvenance(metric_set=name),
                    )
                    for i, r in enumerate(rows)
                ]
        with lock.hold("ncu") if lock else contextlib.nullcontext():
            return profile_candidates(problem, candidates, metric_set, out_dir, **kw)

    return profiler


def replay_hooks(store: Store) -> Callable[[int], LoopHooks]:
    """A resumed `ncu-agent run`'s hooks: what it recorded is given back, nothing else bounds it."""
    return lambda run_id: LoopHooks(evaluator_for(store, run_id, None, None), profiler_for(store, None))
