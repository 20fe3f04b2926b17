"""Run-time guards for the process that runs candidate code (used by `agent.evaluation.candidate_session`).

During every candidate call (`guarded`):
- `ComputeGuard`, a TorchFunctionMode, sees every torch function, tensor method and operator the
  candidate's Python code calls. Ops called from Triton's or PyTorch's own code (Triton's launcher and
  interpreter read tensor metadata, autotuning allocates) are attributed to them, not to the candidate:
  the guard walks the Python stack past torch's frames to the first caller. Candidate-side calls must be
  allocation, metadata, views, fills or same-dtype copies (`ALLOWED_OPS`); anything else is recorded
  as `torch-compute` with the op's name (a decoy Triton kernel beside torch work, a mean in torch and
  the division in Triton, a cast to fp16 in torch...).
- Every Triton launch is checked against the stream that was current when the call began: a launch
  on another stream is `side-stream` (on the GPU; the CPU has no streams).
- Threads started by candidate code (threading or _thread), at any time, and candidate threads still
  alive after a call are `threads`. (Torch function modes are per thread: work in a thread is
  invisible to the compute guard, so threads are refused outright.)
- exec/eval/compile and torch.compile called from the candidate's file, at any time, are
  `code-generator` (torch.compile then hands back its argument uncompiled: no generated code runs).
- Torch function modes left behind and poisoning switched off inside the call are `tamper`.

The guard runs in the candidate's own process, so a candidate that knows about it could try to switch
it off; the static checks (`agent.source.anticheat`) reject the means (torch._C, torch.overrides, frame
access), and the judge's value checks never depend on it (docs/anticheat.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode, resolve_name

from agent.records import Check

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_THIS_FILE = os.path.abspath(__file__)


def _triton_dir() -> str:
    import triton

    return os.path.dirname(triton.__file__) + os.sep


_TRITON_DIR = _triton_dir()

_FACTORIES = (
    "empty empty_like empty_strided zeros zeros_like ones ones_like full full_like tensor as_tensor arange "
    "is_tensor is_floating_point is_complex numel result_type promote_types can_cast as_strided reshape "
    "flatten t transpose permute squeeze unsqueeze narrow select split chunk movedim swapaxes unbind "
    "view_as_real view_as_complex broadcast_shapes"
)
_TENSOR_METHODS = (
    "size stride numel dim ndimension nelement element_size is_contiguous data_ptr storage_offset "
    "untyped_storage is_floating_point is_complex get_device view view_as reshape reshape_as contiguous "
    "expand expand_as permute transpose t unsqueeze squeeze flatten unflatten narrow select as_strided "
    "unbind split chunk movedim swapaxes new_empty new_zeros new_ones new_full new_empty_strided "
    "new_tensor zero_ fill_ clone detach requires_grad_ item __len__ __repr__ __format__ __index__ "
    "__int__ __float__ __bool__ __hash__ __iter__ __reduce_ex__ __deepcopy__ is_set_to dim_order "
    "__setstate__ __getstate__ storage __array_priority__"
)
ALLOWED_OPS = {f"torch.{n}" for n in _FACTORIES.split()} | {
    f"torch.Tensor.{n}" for n in _TENSOR_METHODS.split()
}
_SAME_DTYPE = "to cuda cpu type type_as float double half bfloat16 int long short bool char byte"
# Allowed when the result keeps the input's dtype (a device or layout move, not a cast).
_SAME_DTYPE_OPS = {f"torch.Tensor.{n}" for n in _SAME_DTYPE.split()}


@dataclass
class GuardReport:
    """What the guards saw during one candidate call."""

    torch_ops: Counter[str] = field(default_factory=Counter)
    op_sites: dict[str, str] = field(default_factory=dict)
    side_streams: list[str] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    tamper: list[str] = field(default_factory=list)

    def record_op(self, name: str, frame: Any) -> None:
        self.torch_ops[name] += 1
        if name not in self.op_sites and frame is not None:
            self.op_sites[name] = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"

    def checks(self) -> list[Check]:
        ops = ", ".join(
            f"{name} x{n}" + (f" (at {self.op_sites[name]})" if name in self.op_sites else "")
            for name, n in self.torch_ops.most_common(6)
        )
        out = [
            Check(
                name="code-generator",
                passed=not self.generated,
                detail="; ".join(self.generated) if self.generated else "no code generated at run time",
            ),
            Check(
                name="torch-compute",
                passed=not self.torch_ops,
                detail=f"torch ops outside Triton kernels did work: {ops}"
                if self.torch_ops
                else "no torch compute ops outside Triton kernels",
            ),
            Check(
                name="side-stream",
                passed=not self.side_streams,
                detail=f"Triton launches on a stream other than the caller's: {', '.join(self.side_streams)}"
                if self.side_streams
                else "every Triton launch on the caller's stream",
            ),
            Check(
                name="threads",
                passed=not self.threads,
                detail="; ".join(self.threads) if self.threads else "no threads started by the candidate",
            ),
        ]
        if self.tamper:
            out.append(Check(name="tamper", passed=False, detail="; ".join(self.tamper)))
        return out


@dataclass
class _State:
    installed: bool = False
    active: bool = False
    report: GuardReport | None = None
    cuda: bool = False
    stream: int | None = None
    candidate_files: set[str] = field(default_factory=set)
    started_threads: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)


STATE = _State()


def _trusted_file(filename: str) -> bool:
    return filename.startswith(_TRITON_DIR) or filename == _THIS_FILE


def caller(frame: Any) -> Any:
    """The first frame outside torch's own code, or None when that caller is trusted (Triton, the guard)."""
    while frame is not None and frame.f_code.co_filename.startswith(_TORCH_DIR):
        frame = frame.f_back
    if frame is None or _trusted_file(frame.f_code.co_filename):
        return None
    return frame


def op_name(func: Any) -> str:
    try:
        name = resolve_name(func)
    except Exception:
        name = None
    return name or getattr(func, "__qualname__", None) or repr(func)


def _shares_storage(a: Any, b: Any) -> bool:
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    except Exception:
        return False


def allowed(name: str, args: tuple, result: Any) -> bool:
    if name in ALLOWED_OPS or name.endswith(".__get__"):
        return True
    self = args[0] if args else None
    if name in _SAME_DTYPE_OPS:
        return not isinstance(result, torch.Tensor) or (
            isinstance(self, torch.Tensor) and result.dtype == self.dtype
        )
    if name == "torch.Tensor.copy_":
        src = args[1] if len(args) > 1 else None
        return not isinstance(src, torch.Tensor) or (
            isinstance(self, torch.Tensor) and src.dtype == self.dtype
        )
    if name == "torch.Tensor.__setitem__":
        value = args[2] if len(args) > 2 else None
        return not isinstance(value, torch.Tensor) or (
            isinstance(self, torch.Tensor) and value.dtype == self.dtype
        )
    if name == "torch.Tensor.__getitem__":  # a view; advanced indexing gathers (compute)
        return not isinstance(result, torch.Tensor) or _shares_storage(result, self)
    return False


class ComputeGuard(TorchFunctionMode):
    """Records torch ops called by candidate-side Python code that are not allocation, views or copies."""

    def __init__(self, report: GuardReport):
        super().__init__()
        self.report = report

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        frame = caller(sys._getframe(1))
        result = func(*args, **kwargs)
        if frame is not None:
            name = op_name(func)
            if not allowed(name, args, result):
                self.report.record_op(name, frame)
        return result


def _wrap_launch(cls: Any) -> None:
    original = cls.run
    if getattr(original, "_ncu_agent_guard", False):
        return

    def run(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
        if STATE.active and STATE.cuda and not kwargs.get("warmup", False) and STATE.report is not None:
            current = torch.cuda.current_stream().cuda_stream
            if current != STATE.stream:
                name = getattr(getattr(self, "fn", None), "__name__", type(self).__name__)
                STATE.report.side_streams.append(
                    f"{name} on stream {current:#x} (caller's {STATE.stream:#x})"
                )
        return _original(self, *args, **kwargs)

    run._ncu_agent_guard = True  # type: ignore[attr-defined]
    cls.run = run


def _thread_site() -> str | None:
    """Where the candidate's code started a thread (its innermost frame on the stack), else None."""
    frame = sys._getframe(2)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) not in STATE.candidate_files:
        frame = frame.f_back
    if frame is None:
        return None
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def _wrap_threads() -> None:
    original_start = threading.Thread.start
    if getattr(original_start, "_ncu_agent_guard", False):
        return

    def start(self: threading.Thread, *args: Any, **kwargs: Any) -> Any:
        site = _thread_site()
        if site is not None:
            STATE.started_threads.append(f"the candidate started thread {self.name!r} at {site}")
        return original_start(self, *args, **kwargs)

    start._ncu_agent_guard = True  # type: ignore[attr-defined]
    threading.Thread.start = start  # type: ignore[method-assign]

    import _thread

    for attr in ("start_new_thread", "start_new", "start_joinable_thread"):
        fn = getattr(_thread, attr, None)
        if fn is None or getattr(fn, "_ncu_agent_guard", False):
            continue

        def wrapped(*args: Any, _fn: Any = fn, _attr: str = attr, **kwargs: Any) -> Any:
            site = _thread_site()
            if site is not None:
                STATE.started_threads.append(f"the candidate started a thread with _thread.{_attr} at {site}")
            return _fn(*args, **kwargs)

        wrapped._ncu_agent_guard = True  # type: ignore[attr-defined]
        setattr(_thread, attr, wrapped)


def _called_from_candidate() -> str | None:
    """file:line when the caller of the wrapped function is the candidate's own code, else None."""
    frame = sys._getframe(2)
    if frame is not None and os.path.abspath(frame.f_code.co_filename) in STATE.candidate_files:
        return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    return None


def _wrap_generators() -> None:
    """exec/eval/compile and torch.compile, called by the candidate's own code, are recorded; torch.compile
    then returns its argument uncompiled (no generated code runs)."""
    import builtins

    for name in ("exec", "eval", "compile"):
        original = getattr(builtins, name)
        if getattr(original, "_ncu_agent_guard", False):
            continue

        def wrapped(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            site = _called_from_candidate()
            if site is not None:
                STATE.generated.append(f"the candidate called {_name}() at {site}")
            if _name != "compile" and len(args) < 2 and "globals" not in kwargs:
                # exec/eval without a namespace use their caller's, not this wrapper's
                caller_frame = sys._getframe(1)
                args = (*args, caller_frame.f_globals, caller_frame.f_locals)
            return _original(*args, **kwargs)

        wrapped._ncu_agent_guard = True  # type: ignore[attr-defined]
        setattr(builtins, name, wrapped)

    original_compile = torch.compile
    if getattr(original_compile, "_ncu_agent_guard", False):
        return

    def compile_(model: Any = None, *args: Any, **kwargs: Any) -> Any:
        site = _called_from_candidate()
        if site is None:
            return original_compile(model, *args, **kwargs)
        STATE.generated.append(f"the candidate called torch.compile at {site}")
        return model if model is not None else (lambda fn: fn)

    compile_._ncu_agent_guard = True  # type: ignore[attr-defined]
    torch.compile = compile_


def install() -> None:
    """Wrap Triton's launch entry points and thread starts. Once per process, after
    `agent.evaluation.triton_hooks.install()` and before any candidate is imported."""
    if STATE.installed:
        return
    from triton.runtime import jit

    _wrap_launch(jit.JITFunction)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        from triton.runtime import interpreter

        _wrap_launch(interpreter.InterpretedFunction)
    _wrap_threads()
    _wrap_generators()
    STATE.installed = True


def begin_candidate(candidate_file: str) -> None:
    """A new candidate is about to be imported in this process."""
    STATE.candidate_files = {os.path.abspath(candidate_file)}
    STATE.started_threads.clear()
    STATE.generated.clear()


def baseline_threads() -> set[int]:
    return set(sys._current_frames())


def candidate_threads_alive(baseline: set[int]) -> list[str]:
    """Threads (not in `baseline`) whose stack runs the candidate's code."""
    out = []
    for tid, frame in sys._current_frames().items():
        if tid in baseline or tid == threading.get_ident():
            continue
        f = frame
        while f is not None:
            if os.path.abspath(f.f_code.co_filename) in STATE.candidate_files:
                out.append(
                    f"a candidate thread is still running ({os.path.basename(f.f_code.co_filename)}:"
                    f"{f.f_lineno} in {f.f_code.co_name})"
                )
                break
            f = f.f_back
    return out


def _mode_stack_depth() -> int:
    try:
        return len(torch.overrides._get_current_function_mode_stack())
    except Exception:
        return 0


@contextlib.contextmanager
def guarded(report: GuardReport, device: str, thread_baseline: set[int]) -> Iterator[None]:
    """Run the body (one candidate call) under the guards; findings go to `report`."""
    import torch.utils.deterministic

    depth = _mode_stack_depth()
    STATE.report = report
    STATE.cuda = device == "cuda"
    STATE.stream = torch.cuda.current_stream().cuda_stream if STATE.cuda else None
    STATE.active = True
    mode = ComputeGuard(report)
    try:
        with mode:
            yield
            if not torch.utils.deterministic.fill_uninitialized_memory:
                report.tamper.append(
                    "the candidate switched off fill_uninitialized_memory (output poisoning)"
                )
    finally:
        STATE.active = False
        STATE.report = None
        if _mode_stack_depth() != depth:
            report.tamper.append("the candidate left a torch function mode active")
            while _mode_stack_depth() > depth:
                torch._C._pop_torch_function_stack()
        # Any thread the candidate started, at any time (import, __init__, this call), and any still alive.
        found = STATE.started_threads + candidate_threads_alive(thread_baseline)
        report.threads += [t for t in found if t not in report.threads]
        report.generated += [g for g in STATE.generated if g not in report.generated]


def threads_started_so_far() -> list[str]:
    """Threads the current candidate started at any time (import, __init__, forward)."""
    return list(STATE.started_threads)
