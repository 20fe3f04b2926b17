"""Evaluating one candidate: static checks, then correctness, anti-cheat checks and (on a GPU) timing.

`evaluate` never raises for anything the candidate does: a hang is TIMEOUT, a dead worker is CRASHED,
leaving the process early is CHEATING, and everything else is whatever the judge found.

1. Static checks (`agent.source.anticheat`), in this process, on the source: a violation is CHEATING with
   the rule named, and no worker is started.
2. The judge (`agent.evaluation.judge.Judge`), reaching the candidate through a runner
(`agent.evaluation.candidate_session`):
   - split (the default): the judge runs here, with the reference, the comparison and, on a GPU, the
     eager and torch.compile baselines' timing; the candidate runs in a worker process that only ever
     sees inputs, returns outputs and, on a GPU, times its own calls in turns with the judge's
     (agent/evaluation/timing_sides.py);
   - one process (`split=False`, kept to compare the two layouts' timings): judge and candidate share a
     worker process (`agent.evaluation.worker`), where a candidate could reach the reference.
3. With a `WorkerPool`, the worker process is kept warm between candidates (imports done, CUDA or the
   interpreter initialised) and replaced after any fault or any candidate that was not clean.
"""

from __future__ import annotations

import re
import time as _time
from collections.abc import Sequence
from pathlib import Path

from agent.evaluation import confine, gpu_memory
from agent.evaluation.confine import isolation
from agent.evaluation.judge import Judge
from agent.evaluation.limits import MIN_ADDRESS_SPACE_BYTES, WorkerLimits, limits_for
from agent.evaluation.messages import Evaluate, Evaluated, read_reply
from agent.evaluation.runners import RemoteRunner
from agent.evaluation.sandbox import WorkerOutcome
from agent.evaluation.verdicts import HARNESS_FAILED, describe, undecided
from agent.evaluation.worker_pool import WorkerFault, WorkerPool, WorkerProcess
from agent.records import Check, EvalRequest, EvalResult, ProblemSpec, Status
from agent.source import anticheat as static_checks
from agent.source.anticheat_rules import EVIDENCE_ONLY

CPU_TIMEOUT_S = 120.0
GPU_TIMEOUT_S = 600.0
WORKER_MODULE = "agent.evaluation.worker"
# A warm worker serves the next candidate only after one that passed every check: after any failed check
# (wrong values included) it is replaced, so nothing a failing candidate left can meet the next one.
_REUSABLE = (Status.ACCEPTED,)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def static_result(problem: ProblemSpec, source: str) -> EvalResult | None:
    """The verdict of the static checks alone, or None when they let the candidate through (findings the
    run time decides, `EVIDENCE_ONLY`, are for `static_evidence`)."""
    report = static_checks.check_source(source, [problem.reference_path.stem], problem.allow_torch)
    if report.syntax_error:
        return None  # the worker reports it as a compile error, with the line
    if report.missing_modelnew:
        return EvalResult(status=Status.COMPILE_ERROR, reason="defines no `ModelNew` class")
    report.violations = [v for v in report.violations if v.rule not in EVIDENCE_ONLY]
    if report.violations:
        return EvalResult(
            status=Status.CHEATING,
            reason=report.reason(),
            rule=report.rule,
            checks=[
                Check(name=v.rule, passed=False, detail=f"static, line {v.line}: {v.message}")
                for v in report.ranked()
            ],
        )
    return None


def static_evidence(problem: ProblemSpec, source: str) -> list[Check]:
    """Static findings the run time decides, shown with the verdict as warnings (`static-evidence`)."""
    report = static_checks.check_source(source, [problem.reference_path.stem], problem.allow_torch)
    found = [v for v in report.ranked() if v.rule in EVIDENCE_ONLY]
    return [
        Check(
            name="static-evidence",
            passed=True,
            detail=f"warning: line {v.line}: {v.rule}: {v.message} (decided at run time)",
        )
        for v in found[:8]
    ]


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
    pool: WorkerPool | None = None,
    static: bool = True,
    split: bool | None = None,
    baselines: bool = True,
) -> EvalResult:
    """Check `source` (a module defining ModelNew) against `problem` and, on a GPU, time it.

    `pool`: reuse warm worker processes (see `WorkerPool`); `static=False` skips the static checks (to
    test the run-time defences alone); `split`: judge outside the candidate's process (the default;
    False: both in one worker); `baselines=False`: time the candidate alone (no eager or torch.compile).
    """
    device = device or default_device()
    cpu = device == "cpu"
    start = _time.perf_counter()
    result = static_result(problem, source) if static else None
    decided_statically = result is not None
    if result is None:
        request = EvalRequest(
            problem=problem,
            candidate_source=source,
            device=device,
            seeds=list(seeds),
            small=cpu if small is None else small,
            time=time,
            baselines=baselines,
            **({"timing_reps": timing_reps} if timing_reps else {}),
        )
        limit = timeout_s if timeout_s is not None else CPU_TIMEOUT_S if cpu else GPU_TIMEOUT_S
        result = _judged(request, limit, pool, True if split is None else split)
    if static and not decided_statically:
        result.checks += static_evidence(problem, source)
    if cpu and result.status == Status.ACCEPTED:
        result = _undecided_on_cpu(result, source)
    result.device = device
    result.interpreter = cpu
    result.shapes = dict(problem.small_shapes) if (cpu if small is None else small) else {}
    result.allow_torch = list(problem.allow_torch)
    result.isolation = isolation().label
    result.wall_s = _time.perf_counter() - start
    return result


def _judged(request: EvalRequest, limit: float, pool: WorkerPool | None, split: bool) -> EvalResult:
    """The judge's verdict, with the judge outside the candidate's process (`split`) or beside it. A harness
    failure in a reused worker (its state, not the candidate's doing) is judged again in a new one."""
    evaluate_once = _evaluate_split if split else _evaluate_pooled
    result = evaluate_once(request, limit, pool)
    if pool is not None and result.worker_reused and _harness_failed(result):
        first = result.reason
        result = evaluate_once(request, limit, pool)
        result.checks.append(
            Check(
                name="fresh-worker",
                passed=True,
                detail=f"warning: in a reused worker {first[:300]}; evaluated again in a new one",
            )
        )
    return result


def _undecided_on_cpu(result: EvalResult, source: str) -> EvalResult:
    """An accepted CPU result becomes UNDECIDED when a device or interpreter branch does other work in the
    arm the CPU never runs."""
    found = undecided(source)
    if found is None:
        return result
    reason, checks = found
    return result.model_copy(
        update={
            "status": Status.UNDECIDED,
            "reason": reason,
            "rule": "device-branch",
            "checks": result.checks + checks,
        }
    )


def _harness_failed(result: EvalResult) -> bool:
    return result.status == Status.CRASHED and result.reason.startswith(HARNESS_FAILED)


def _env(device: str) -> dict[str, str]:
    return {"TRITON_INTERPRET": "1" if device == "cpu" else "0"}


def start_worker(
    device: str, read_only: Sequence[Path] = (), caps: WorkerLimits | None = None
) -> WorkerProcess:
    """A serving worker; `read_only`: what it may read besides Python and the project (the reference, for a
    worker that judges too); `caps`: its limits, sized to the problem (agent.evaluation.limits)."""
    caps = caps or WorkerLimits(address_space_bytes=MIN_ADDRESS_SPACE_BYTES if device == "cpu" else None)
    return WorkerProcess(
        WORKER_MODULE,
        _env(device),
        address_space_bytes=caps.address_space_bytes,
        file_bytes=caps.file_bytes,
        read_only=read_only,
        gpu=device != "cpu",
    )


def _acquire(
    request: EvalRequest, pool: WorkerPool | None, judges: bool = False
) -> tuple[WorkerProcess, tuple[str, str, str]]:
    """A worker for the request: the pool's warm one, or a new one. `judges`: it loads the reference too."""
    key = (request.device, request.problem.name, "judges" if judges else "candidate")
    read_only = [request.problem.reference_path.resolve()] if judges else []
    caps = limits_for(request.problem, request.device, request.small)
    factory = lambda: start_worker(request.device, read_only, caps)  # noqa: E731
    worker = pool.acquire(key, factory) if pool is not None else factory()
    worker.mark()
    return worker, key


def _finish(
    pool: WorkerPool | None,
    key: tuple[str, str, str],
    worker: WorkerProcess,
    reusable: bool,
    result: EvalResult,
    out: str,
    err: str,
    why: str = "",
) -> EvalResult:
    """The worker's log tails onto the result, and the worker back to the pool (kept if `reusable`; `why`
    not, else the result's reason) or closed."""
    result.log_tail = log_tail(WorkerOutcome(returncode=None, stdout_tail=out, stderr_tail=err))
    left = confine.remove_owned(worker.uid, confine.world_writable()) if worker.uid is not None else []
    if left:  # only possible without bwrap: the candidate wrote outside its box
        reusable = False
        result = _left_behind(result, left)
    result.worker_reused = worker.uses > 0
    if pool is not None:
        pool.release(key, worker, reusable, f"{result.status.value}: {why or result.reason}"[:300])
    else:
        worker.close()
    return result


def _left_behind(result: EvalResult, left: list[Path]) -> EvalResult:
    names = ", ".join(str(p) for p in left[:5])
    detail = f"the candidate's process wrote outside its directory (removed): {names}"
    checks = [*result.checks, Check(name="left-behind", passed=False, detail=detail)]
    if not result.accepted:
        return result.model_copy(update={"checks": checks})
    return EvalResult(
        status=Status.CHEATING, reason=detail, rule="left-behind", checks=checks, log_tail=result.log_tail
    )


def _evaluate_split(request: EvalRequest, limit: float, pool: WorkerPool | None) -> EvalResult:
    """The judge here, the candidate in a worker process."""
    deadline = _time.monotonic() + limit
    worker, key = _acquire(request, pool)
    runner = RemoteRunner(worker, request.device, deadline)
    reusable = False
    try:
        result = Judge(request, runner).run()
        if result.status in _REUSABLE:
            clean, why = runner.finish()
            reusable = clean
            if not clean and result.accepted:
                result = EvalResult(
                    status=Status.CHEATING,
                    reason=f"tamper failed (after the checks): the candidate {why}",
                    rule="tamper",
                    checks=result.checks,
                )
    except WorkerFault as fault:
        result = fault_result(fault.outcome, limit)
    except Exception as e:  # a bug of the judge's side: never the caller's problem, never a reused worker
        result = EvalResult(status=Status.CRASHED, reason=f"{HARNESS_FAILED}: {describe(e)}"[:2000])
        reusable = False
    finally:
        if request.device == "cuda":
            gpu_memory.release()  # the judge's freed memory, for the worker and the profiler
    return _finish(pool, key, worker, reusable, result, *worker.tails())


def _evaluate_pooled(request: EvalRequest, limit: float, pool: WorkerPool | None) -> EvalResult:
    """Judge and candidate in one worker process (the one-process layout): the pool's warm one, or a
    new one."""
    worker, key = _acquire(request, pool, judges=True)
    reusable, why = False, ""
    try:
        message = Evaluate(request=request, dir=str(worker.new_dir()))
        reply = read_reply(worker.request(message, limit), Evaluated)
        if isinstance(reply, Evaluated):
            result, why = reply.result, reply.why
            reusable = reply.clean and result.status in _REUSABLE
        else:
            result = EvalResult(status=Status.CRASHED, reason=reply.reason[:2000])
        out, err = worker.tails()
    except ValueError as e:  # a reply that is neither
        result = EvalResult(status=Status.CRASHED, reason=str(e))
        out, err = worker.tails()
    except WorkerFault as fault:
        result = fault_result(fault.outcome, limit)
        why = f"worker fault: {fault.kind}"
        out, err = fault.outcome.stdout_tail, fault.outcome.stderr_tail
    return _finish(pool, key, worker, reusable, result, out, err, why)


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


def fault_result(outcome: WorkerOutcome, timeout_s: float) -> EvalResult:
    """A worker that gave no answer: timed out, died, exited, or answered without its token."""
    tail = log_tail(outcome)
    if outcome.timed_out:
        return EvalResult(status=Status.TIMEOUT, reason=f"killed after {timeout_s:g} s", log_tail=tail)
    if outcome.forged:
        reason = "the result was not written by the evaluator (the candidate wrote it and exited?)"
        return EvalResult(
            status=Status.CHEATING,
            rule="forged-result",
            reason=reason,
            checks=[Check(name="forged-result", passed=False, detail=reason)],
            log_tail=tail,
        )
    if outcome.signal:
        why = f"the worker died from {outcome.signal}"
    elif outcome.returncode == 0:
        reason = (
            "the candidate ended the worker process with exit code 0 before the evaluator could answer "
            "(os._exit or sys.exit?): leaving the process as if the checks had passed is not allowed"
        )
        return EvalResult(
            status=Status.CHEATING,
            rule="process-exit",
            reason=reason,
            checks=[Check(name="process-exit", passed=False, detail=reason)],
            log_tail=tail,
        )
    else:
        why = f"the worker exited with code {outcome.returncode} without a result"
    gist = crash_summary(outcome.stderr_tail)
    return EvalResult(status=Status.CRASHED, reason=why + (f"; {gist}" if gist else ""), log_tail=tail)
