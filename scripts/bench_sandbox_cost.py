"""What the sandbox adds per warm evaluation: `python scripts/bench_sandbox_cost.py N [DEVICE]` (cpu, cuda).

tests/candidates/simple_l1.py (one seed, no autotune) in a warm worker with bwrap and one without
(NCU_AGENT_SANDBOX=off), N pairs interleaved; then the per-candidate work the sandbox adds in the parent,
timed alone. docs/anticheat.md ("Cost") has the numbers.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from agent.evaluation import confine
from agent.evaluation.evaluate import evaluate
from agent.evaluation.worker_pool import WorkerPool
from agent.problem import load_problem
from agent.records import EvalResult

ROOT = Path(__file__).resolve().parent.parent
PROBLEM = load_problem(str(ROOT / "kernels" / "l1_norm"))
SOURCE = (ROOT / "tests" / "candidates" / "simple_l1.py").read_text()
FAKE_UID = 2_000_001
DEVICE = sys.argv[2] if len(sys.argv) > 2 else "cpu"


def _mode(mode: str) -> None:
    if mode == "off":
        os.environ[confine.SANDBOX_ENV] = "off"
    else:
        os.environ.pop(confine.SANDBOX_ENV, None)
    confine.isolation.cache_clear()


def _timed(pool: WorkerPool) -> tuple[float, EvalResult]:
    start = time.perf_counter()
    result = evaluate(PROBLEM, SOURCE, DEVICE, seeds=(0,), time=False, pool=pool)
    return time.perf_counter() - start, result


def _parent_side_ms(n: int = 100) -> float:
    """A chowned candidate folder and the scan of the world-writable folders, per candidate."""
    base, box = confine.make_box(confine.worker_uid())
    start = time.perf_counter()
    for k in range(n):
        d = box / f"c{k}"
        d.mkdir()
        os.chown(d, FAKE_UID, FAKE_UID)
        confine.remove_owned(FAKE_UID, confine.world_writable())
    confine.remove_box(base, None)
    return (time.perf_counter() - start) * 1000 / n


def main(n: int) -> None:
    pools = {"on": WorkerPool(), "off": WorkerPool()}
    warm: dict[str, list[float]] = {"on": [], "off": []}
    for mode, pool in pools.items():
        _mode(mode)
        cold, result = _timed(pool)
        print(mode, result.status.value, result.isolation, f"cold {cold:.2f} s", flush=True)
    for _ in range(n):
        for mode, pool in pools.items():
            _mode(mode)
            wall, result = _timed(pool)
            assert result.accepted and result.worker_reused, (result.reason, result.worker_reused)
            warm[mode].append(wall)
    for mode, pool in pools.items():
        pool.close()
        runs = [round(x, 3) for x in warm[mode]]
        print(mode, "warm runs", runs, "median", round(statistics.median(warm[mode]), 3))
    diffs = [a - b for a, b in zip(warm["on"], warm["off"], strict=True)]
    print("median of (on - off) per pair:", round(statistics.median(diffs), 3))
    print("parent-side per candidate (chown + scan), ms:", round(_parent_side_ms(), 2))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
