"""The worker process that evaluates a candidate: `python -m agent.evaluation.worker`.

Evaluating a candidate takes two roles, kept apart so that the code deciding a verdict never has to trust
the code being judged: the **judge** (`agent.evaluation.judge`: reference, inputs, comparison, timing) and the
**candidate session** (`agent.evaluation.candidate_session`: imports and calls the untrusted module under the
guards), joined by a runner. This module is the process that hosts them.

Where they run:
- By default (CPU and GPU), the judge runs in the parent (`agent.evaluation.evaluate`) and the session in a
  separate worker process (`python -m agent.evaluation.worker --serve`), reached through `RemoteRunner`:
  tensors cross as `torch.save` files read back with `weights_only=True`, or on a GPU by CUDA IPC through
  the judge's buffers (agent/evaluation/cuda_ipc.py); on a GPU the worker also re-tunes and times the
  candidate, in turns with the judge's baselines (agent/evaluation/worker_timing.py). The candidate's
  process never holds the reference module, the reference outputs or the comparison code, so it cannot
  read or patch them (docs/anticheat.md).
- In the one-process layout (`evaluate(split=False)`, to compare the layouts' timings), judge and session
  share one worker process (`InProcessRunner`, `evaluate_in_process`); a `TamperWatch` then also guards
  the reference module and the harness.

The worker process serves (`--serve CMD_FD RESP_FD`: one request and one reply a line on private pipes,
agent/evaluation/worker_pool.py) and always exits with `os._exit`, so threads or atexit handlers the
candidate left behind cannot hang or alter the exit. Its replies carry the token the parent sent before any
candidate code existed, so the parent can tell them from something the candidate wrote.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.evaluation import cuda_ipc, gpu_memory, triton_hooks
from agent.evaluation.candidate_session import CandidateSession
from agent.evaluation.judge import Judge
from agent.evaluation.limits import limit_hit
from agent.evaluation.messages import (
    COMMAND,
    Build,
    Bye,
    Call,
    Called,
    Command,
    Done,
    Evaluate,
    Evaluated,
    Fetch,
    Finish,
    Finished,
    Load,
    Probe,
    Probed,
    Refused,
    Retune,
    Time,
    TimeEnd,
    TimeStart,
)
from agent.evaluation.runners import InProcessRunner
from agent.evaluation.verdicts import HARNESS_FAILED, Rejected, classify, describe, exit_note
from agent.evaluation.worker_setup import prepare, warm_harness
from agent.evaluation.worker_timing import WorkerTiming, retune_in_worker
from agent.records import EvalRequest, EvalResult, Status


def evaluate_in_process(request: EvalRequest, workdir: Path) -> tuple[EvalResult, bool, str]:
    """Judge and candidate in this process (the one-process layout): (result, whether the process is
    clean, why not)."""
    from agent.evaluation import guards as runtime_guards
    from agent.evaluation.tamper import TamperWatch
    from agent.problem import ProblemError, load_reference

    triton_hooks.install()
    if request.device == "cuda" and not triton_hooks.interpreting():
        from agent.evaluation import parallel_compile

        parallel_compile.install()  # an autotuner's configs compile side by side
    runtime_guards.install()
    # the judge re-tunes every autotuned kernel before timing it, so the autotuner's own pick may be quick
    triton_hooks.STATE.quick_autotune = request.device == "cuda" and request.time
    try:
        ref_module = load_reference(request.problem, request.small)
    except ProblemError as e:
        return EvalResult(status=Status.CRASHED, reason=f"the problem's reference failed: {e}"), True, ""
    ref_classes = {f"reference.{k}": v for k, v in vars(ref_module).items() if isinstance(v, type)}
    watch = TamperWatch({"reference": ref_module, **ref_classes})
    runner = InProcessRunner(request.device, workdir, watch)
    result = Judge(request, runner, ref_module).run()
    clean, why = runner.finish()
    runner.session.unload()
    return result, clean, why


# --- the worker process ---------------------------------------------------------------------------------


class _Server:
    """`--serve`: answers the parent's commands (agent/evaluation/messages.py), one JSON line each, until
    `Bye` or end of input."""

    def __init__(self) -> None:
        self.session: CandidateSession | None = None
        self.timing: WorkerTiming | None = None
        self.pending: tuple[list[Any], list[Any]] = ([], [])  # the last call's tensors, for `Fetch`

    def handle(self, cmd: Command) -> BaseModel:
        try:
            match cmd:
                case Load():
                    return self.load(cmd)
                case Build():
                    return self.build(cmd)
                case Call():
                    return self.call(cmd)
                case Fetch():
                    return self.fetch(cmd)
                case Probe():
                    return Probed(sum=cuda_ipc.probe_sum(cmd.shared))
                case Retune():
                    return retune_in_worker(self._session(), cmd)
                case TimeStart():
                    self.timing = WorkerTiming(self._session(), cmd)
                    return Done()
                case Time():
                    return self._timing().time(cmd)
                case TimeEnd():
                    ended, kept = self._timing().end(cmd)
                    self.timing = None
                    if cmd.ipc:
                        self.pending = (kept, [])
                    return ended
                case Finish():
                    return self.finish()
                case Evaluate():
                    return self.evaluate(cmd)
            raise ValueError(f"no handler for {cmd.op!r}")
        except Rejected as r:
            return Refused(status=r.status, reason=r.reason, rule=r.rule)

    def _session(self) -> CandidateSession:
        if self.session is None:
            raise ValueError("no candidate is loaded")
        return self.session

    def _timing(self) -> WorkerTiming:
        if self.timing is None:
            raise ValueError("no timing was started")
        return self.timing

    def load(self, cmd: Load) -> Done:
        workdir = Path(cmd.dir)
        os.chdir(workdir)
        self.session = CandidateSession(cmd.device, workdir)
        # the judge re-tunes every autotuned kernel before timing it: the autotuner's pick may be quick
        triton_hooks.STATE.quick_autotune = cmd.quick_autotune
        if cmd.quick_autotune:
            from agent.evaluation import parallel_compile  # deferred: GPU only

            parallel_compile.install()  # an autotuner's configs compile side by side
        self.session.load(cmd.source, cmd.allow_torch)
        return Done()

    def build(self, cmd: Build) -> Done:
        import torch

        assert self.session is not None
        data = torch.load(cmd.path, weights_only=True)
        self.session.build(cmd.key, cmd.seed, list(data["init"]), dict(data["state"]))
        return Done(note=self.session.weights)

    def call(self, cmd: Call) -> Called | Refused:
        import torch

        session = self.session
        assert session is not None
        held = session.inputs.get(cmd.key)
        if cmd.mode == "again" and held is not None:  # the very tensors of the last call, untouched
            return self._reply(session.call(cmd.key, held, cmd.where, cmd.config, cmd.poison), cmd)
        loaded = cuda_ipc.load_inputs(cmd.inputs, cmd.shared, session.device)
        if cmd.mode in ("same", "refresh") and held is not None and len(held) == len(loaded):
            # the same objects as before (same data pointers), holding the values just sent
            for x, new in zip(held, loaded, strict=True):
                if isinstance(x, torch.Tensor):
                    if x.shape != new.shape:
                        x.resize_(new.shape)
                    x.copy_(new)
            inputs = held
        else:
            inputs = loaded
        result = session.call(cmd.key, inputs, cmd.where, cmd.config, cmd.poison)
        return self._reply(result, cmd)

    def _reply(self, result: Any, cmd: Call) -> Called | Refused:
        import torch

        called = Called(
            launches=result.launches,
            own=result.own_kernels,
            checks=result.checks,
            aliasing=result.aliasing,
            max_configs=result.max_configs,
            work=result.work or {},
        )
        if cmd.ipc:  # the judge fetches them into its own buffers (`Fetch`)
            self.pending = (list(result.outputs), list(result.inputs_after))
            called.outputs_meta = [cuda_ipc.meta(o) if o is not None else None for o in result.outputs]
            called.inputs_meta = [
                cuda_ipc.meta(x) if isinstance(x, torch.Tensor) else None for x in result.inputs_after
            ]
            return called
        data = {
            "outputs": [o.detach().cpu().clone() if o is not None else None for o in result.outputs],
            "inputs_after": [
                x.detach().cpu().clone() if isinstance(x, torch.Tensor) else x for x in result.inputs_after
            ],
        }
        try:
            torch.save(data, cmd.outputs)
        except Exception as e:
            nbytes = sum(t.nbytes for v in data.values() for t in v if isinstance(t, torch.Tensor))
            hit = limit_hit(e, "the candidate's outputs", nbytes)
            if hit is None:
                raise
            return Refused(status=Status.CRASHED, reason=f"{HARNESS_FAILED}: {hit}")
        return called

    def fetch(self, cmd: Fetch) -> Done:
        """The last call's outputs and inputs into the judge's buffers (None: nothing to copy there)."""
        outputs, inputs = self.pending
        self.pending = ([], [])
        if len(cmd.outputs) != len(outputs) or len(cmd.inputs) != len(inputs):
            raise ValueError("the judge's buffers do not match the last call")
        for x, shared in (*zip(outputs, cmd.outputs, strict=True), *zip(inputs, cmd.inputs, strict=True)):
            if shared is not None:
                cuda_ipc.send(x, shared)
        return Done()

    def finish(self) -> Finished:
        clean, why = (True, "") if self.session is None else self.session.clean()
        if self.session is not None:
            self.session.unload()
        self.session = None
        self.timing = None
        clean, why = _GPU_MEMORY.settle(clean, why)
        return Finished(clean=clean, why=why)

    def evaluate(self, cmd: Evaluate) -> Evaluated:
        request, workdir = cmd.request, Path(cmd.dir)
        os.chdir(workdir)
        warm_harness(request)
        start = time.perf_counter()
        try:
            result, clean, why = evaluate_in_process(request, workdir)
        except BaseException as e:
            result, clean, why = (
                EvalResult(status=Status.CRASHED, reason=f"{HARNESS_FAILED}: {describe(e)}"),
                False,
                "the evaluator failed",
            )
        result.device = request.device
        result.interpreter = request.device == "cpu"
        result.wall_s = time.perf_counter() - start
        clean, why = _GPU_MEMORY.settle(clean, why)
        return Evaluated(result=result, clean=clean, why=why)


class _GpuMemory:
    """GPU memory a serving worker still holds after an evaluation, against what it held after its first
    one (the kept baseline Model lives there): tensors kept between candidates would pile up across warm
    evaluations of a big problem until one runs out of memory (an l1_norm run on the H200 met a CUDA OOM in
    a warm worker holding 138 GiB, 2026-11-26), so a worker that grows is replaced instead of reused."""

    LIMIT = 1 << 30  # bytes of growth that end the worker's reuse

    def __init__(self) -> None:
        self.first: int | None = None

    def settle(self, clean: bool, why: str) -> tuple[bool, str]:
        """After an evaluation: freed memory released, then whether the worker may be reused (and why not)."""
        gpu_memory.release()
        grown = self.growth()
        return (False, grown) if clean and grown else (clean, why)

    def growth(self) -> str:
        """Why the worker should not be reused ("" if it may)."""
        if "torch" not in sys.modules:
            return ""
        import torch

        with contextlib.suppress(Exception):  # a dead CUDA context: the worker is replaced anyway
            if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
                return ""
            held = torch.cuda.memory_allocated()
            if self.first is None:
                self.first = held
                return ""
            grown = held - self.first
            if grown > self.LIMIT:
                return (
                    f"{grown / 2**30:.1f} GiB more GPU memory allocated than after this worker's first "
                    "evaluation (tensors kept between candidates)"
                )
        return ""


_GPU_MEMORY = _GpuMemory()


def serve(cmd_fd: int, resp_fd: int) -> None:
    reader = os.fdopen(cmd_fd, "rb", buffering=0)
    lines = _LineReader(reader)
    token = lines.next().decode().strip()
    prepare(lines.next())
    server = _Server()

    def send(reply: BaseModel) -> None:
        data = f"{token} {reply.model_dump_json()}\n".encode()
        view = memoryview(data)
        while view:
            n = os.write(resp_fd, view)
            view = view[n:]

    while True:
        line = lines.next()
        if not line:
            break
        try:
            cmd = COMMAND.validate_json(line)
        except ValueError:
            break
        if isinstance(cmd, Bye):
            send(Done())
            break
        try:
            reply = server.handle(cmd)
        except BaseException as e:
            status, rule = classify(e)
            reply = Refused(
                status=status if rule else Status.CRASHED,
                reason=f"{HARNESS_FAILED}: {describe(e)}{exit_note(rule)}",
                rule=rule,
            )
        sys.stdout.flush()
        sys.stderr.flush()
        send(reply)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class _LineReader:
    def __init__(self, f: Any):
        self.f = f
        self.buf = b""

    def next(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.f.read(1 << 16)
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line


def main(argv: list[str] | None = None) -> None:
    """`--serve FD_IN FD_OUT`: the only way a worker runs (agent/evaluation/worker_pool.py starts it)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "--serve":
        sys.stderr.write("usage: python -m agent.evaluation.worker --serve FD_IN FD_OUT\n")
        raise SystemExit(2)
    # Triton reads TRITON_INTERPRET when kernels are defined: the parent set it in the environment.
    serve(int(args[1]), int(args[2]))


if __name__ == "__main__":
    main()
