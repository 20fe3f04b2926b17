"""Evaluating one candidate: correctness, anti-cheat checks and (on a GPU) timing, in a worker process.

`evaluate` never raises for anything the candidate does: a hang is TIMEOUT, a dead worker is CRASHED,
and everything else is whatever the worker (`agent.worker`) found.
"""

from __future__ import annotations

import re
import time as _time
from collections.abc import Sequence

from pydantic import ValidationError

from agent.models import EvalRequest, EvalResult, ProblemSpec, Status
from agent.sandbox import CPU_ADDRESS_SPACE_BYTES, WorkerOutcome, run_worker

CPU_TIMEOUT_S = 120.0
GPU_TIMEOUT_S = 600.0
WORKER_MODULE = "agent.worker"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate(
    problem: ProblemSpec,
    source: str,
    device: str | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    small: bool | None = None,
    time: bool = True,
    timeout_s: float | None = None,
    timing_reps: int | None = None,
) -> EvalResult:
    """Check `source` (a module defining ModelNew) against `problem` and, on a GPU, time it."""
    device = device or default_device()
    cpu = device == "cpu"
    request = EvalRequest(
        problem=problem,
        candidate_source=source,
        device=device,
        seeds=list(seeds),
        small=cpu if small is None else small,
        time=time,
        **({"timing_reps": timing_reps} if timing_reps else {}),
    )
    limit = timeout_s if timeout_s is not None else CPU_TIMEOUT_S if cpu else GPU_TIMEOUT_S
    start = _time.perf_counter()
    outcome = run_worker(
        WORKER_MODULE,
        request,
        limit,
        {"TRITON_INTERPRET": "1" if cpu else "0"},
        address_space_bytes=CPU_ADDRESS_SPACE_BYTES if cpu else None,
    )
    result = to_result(outcome, limit)
    result.device = device
    result.interpreter = cpu
    result.wall_s = _time.perf_counter() - start
    return result


def log_tail(outcome: WorkerOutcome) -> str:
    parts = []
    if outcome.stderr_tail.strip():
        parts.append(f"--- stderr (tail) ---\n{outcome.stderr_tail}")
    if outcome.stdout_tail.strip():
        parts.append(f"--- stdout (tail) ---\n{outcome.stdout_tail}")
    return "\n".join(parts)


def crash_summary(stderr: str, n: int = 6) -> str:
    """The gist of a dead worker's stderr: faulthandler's fatal error and frames, else its last lines."""
    lines = stderr.strip().splitlines()
    if any("most recent call first" in line for line in lines):
        frames = [
            re.sub(r'File "(?:[^"]*/)?([^"/]+)"', r"\1", line.strip())
            for line in lines
            if line.strip().startswith('File "')
        ]
        parts = [line for line in lines if line.startswith("Fatal Python error")][:1]
        if frames:
            parts.append(f"innermost frame: {frames[0]}")
            own = next((f for f in frames if f.startswith("candidate_")), None)
            if own and own != frames[0]:
                parts.append(f"candidate frame: {own}")
        return "; ".join(parts)
    return "\n".join(line for line in lines[-n:] if not line.startswith("Extension modules"))


def to_result(outcome: WorkerOutcome, timeout_s: float) -> EvalResult:
    """Map how the worker ended to an EvalResult."""
    tail = log_tail(outcome)
    if outcome.timed_out:
        return EvalResult(status=Status.TIMEOUT, reason=f"killed after {timeout_s:g} s", log_tail=tail)
    if outcome.forged:
        return EvalResult(
            status=Status.CHEATING,
            reason="the result file was not written by the evaluator (the candidate wrote it and exited?)",
            log_tail=tail,
        )
    if outcome.result_json is not None:
        try:
            result = EvalResult.model_validate_json(outcome.result_json)
        except ValidationError as e:
            return EvalResult(
                status=Status.CRASHED,
                reason=f"the worker's result could not be read: {e}"[:2000],
                log_tail=tail,
            )
        result.log_tail = tail
        return result
    if outcome.signal:
        why = f"the worker died from {outcome.signal}"
    else:
        why = f"the worker exited with code {outcome.returncode} without a result"
    gist = crash_summary(outcome.stderr_tail)
    return EvalResult(status=Status.CRASHED, reason=why + (f"; {gist}" if gist else ""), log_tail=tail)
