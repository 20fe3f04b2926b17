"""What a worker process (agent/evaluation/worker.py) does before its first candidate: the harness imported
(`preload`), its sources checked against the parent's, the process locked down (`prepare`), and what
torch.compile would otherwise do lazily mid-evaluation done first (`warm_harness`)."""

from __future__ import annotations

import contextlib
import functools
import os
import sys

from agent.records import EvalRequest


def preload(gpu: bool) -> None:
    """Import everything the harness uses before any candidate runs: afterwards this process reads no
    module file (a candidate could have changed what it would find)."""
    import torch
    import torch.utils.deterministic
    import triton.language  # noqa: F401

    from agent import problem  # noqa: F401
    from agent.evaluation import (  # noqa: F401
        baseline_cache,
        candidate,
        compare,
        compare_kernel,
        guards,
        interpreter_shims,
        judge,
        retune,
        timing,
        triton_hooks,
        verdicts,
        weights,
    )
    from agent.prompt import gpus  # noqa: F401  (the interpreter's stand-in driver answers from it)

    if gpu:
        from agent.evaluation import parallel_compile  # noqa: F401
    judge.full_fp32()  # before any candidate: every phase at one precision
    del torch


def prepare(setup_line: bytes | str) -> None:
    """Between the parent's setup and the first candidate: harness imported, its sources checked against
    the parent's hashes, then the process locked down (agent.evaluation.lockdown)."""
    from agent.evaluation.lockdown import WorkerSetup, changed_sources, lock_down

    setup = WorkerSetup.model_validate_json(setup_line)
    preload(gpu=not setup.block_processes)
    changed = changed_sources(setup.sources)
    if changed:
        sys.stderr.write(
            "error: the evaluator's own files changed since the run started (refusing to judge with them): "
            + ", ".join(changed)
            + "\n"
        )
        sys.stderr.flush()
        os._exit(5)
    lock_down(setup)


def warm_harness(request: EvalRequest) -> None:
    """What the harness would otherwise do lazily during the first candidate's evaluation, done before the
    first TamperWatch snapshot of a serving worker: torch.compile's first use patches
    nn.Module.__init__ and __setstate__ (dynamo's module tracking), which the watch would report as the
    candidate's tampering, and the worker would never be reused."""
    if request.device == "cuda" and request.time and request.baselines:
        _warm_compile()


@functools.cache
def _warm_compile() -> None:
    import torch

    from agent.evaluation import (
        timing,  # noqa: F401  (imported here, not mid-evaluation)
    )

    with contextlib.suppress(Exception):  # a broken torch.compile shows up as the baseline's compile_error
        fn = torch.compile(lambda x: x * 2 + 1)
        fn(torch.ones(8, device="cuda"))
        torch.cuda.synchronize()
        torch._dynamo.reset()
