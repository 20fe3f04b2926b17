"""Compiling an autotuned kernel's configs in parallel, before its autotuner benchmarks them one by one.

Triton's autotuner compiles each config when it first benchmarks it, so a new source with 5 configs pays 5
compiles in a row (and 5 more for each new shape). In a GPU worker, `install` wraps
`Autotuner.prune_configs` (called exactly when a new key is about to be benchmarked) so that the configs it
returns are first compiled side by side on a thread pool, through Triton's own `AsyncCompileMode` and
`warmup` (no launch). Triton's passes and ptxas release the GIL, so the compiles overlap.

It only fills Triton's kernel cache: a config whose compile fails here is compiled again, in the usual
way, when the autotuner benchmarks it (and fails there as it would have). The pool's threads are started
when the worker starts, not from inside a candidate's call, so the run-time guard does not count them
as threads the candidate started (agent/evaluation/guards.py). `NCU_AGENT_PARALLEL_COMPILE=0` switches
it off (to measure what it saves).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

THREADS = max(1, min(8, (os.cpu_count() or 2) - 1))
_POOL: dict[str, Executor | None] = {"pool": None}


def enabled() -> bool:
    return os.environ.get("NCU_AGENT_PARALLEL_COMPILE", "1") not in ("0", "")


def start_pool(threads: int = THREADS) -> Executor:
    """The pool, with all its threads started now (ThreadPoolExecutor starts them lazily, on submit)."""
    if _POOL["pool"] is None:
        pool = ThreadPoolExecutor(threads, thread_name_prefix="ncu-agent-compile")
        barrier = threading.Barrier(threads + 1)
        for _ in range(threads):
            pool.submit(barrier.wait)
        barrier.wait()  # every thread exists and is idle again
        _POOL["pool"] = pool
    return _POOL["pool"]  # type: ignore[return-value]


def precompile(fn: Any, args: Sequence[Any], kwargs: dict[str, Any], configs: Sequence[Any]) -> int:
    """Compile `fn` for each config at these arguments, in parallel; returns how many compiles were asked.
    Errors are left for the real launch to raise."""
    from triton.runtime._async_compile import AsyncCompileMode, active_mode

    if len(configs) < 2 or active_mode.get() is not None:
        return 0
    asked = 0
    with AsyncCompileMode(start_pool(), ignore_errors=True):
        for config in configs:
            try:
                fn.warmup(*args, grid=(1,), **dict(kwargs, **config.all_kwargs()))
                asked += 1
            except Exception:  # the autotuner's own compile of this config reports it
                pass
    return asked


def install() -> None:
    """Wrap the autotuner's `prune_configs` (once per process; GPU workers only)."""
    from triton.runtime import autotuner

    original: Callable[..., Any] = autotuner.Autotuner.prune_configs
    if getattr(original, "_ncu_agent_precompile", False):
        return

    def prune_configs(self: Any, kwargs: dict[str, Any]) -> Any:
        configs = original(self, kwargs)
        if enabled() and self.nargs is not None:
            precompile(self.fn, list(self.nargs.values()), kwargs, configs)
        return configs

    prune_configs._ncu_agent_precompile = True  # type: ignore[attr-defined]
    autotuner.Autotuner.prune_configs = prune_configs  # type: ignore[method-assign]
    start_pool()
