"""Run-time guards for the process that runs candidate code (used by `agent.evaluation.candidate_session`).

During every candidate call (`guarded`):
- `accounting.WorkMeter`, a TorchDispatchMode, sees every ATen op at every depth and attributes it by
  the code on the stack (`agent.evaluation.accounting`): the candidate's ops must be in the allowed set
  (allocation, views, fills, same-dtype copies by default; `set_allowed_ops` plugs in another policy),
  anything else is `torch-compute` with the op's name. Each launch's grid and tensor arguments are
  recorded: an output no non-empty launch of the candidate's kernels received is `launch-covers-output`.
- Every Triton launch is checked against the stream that was current when the call began: a launch
  on another stream is `side-stream` (on the GPU; the CPU has no streams).
- Threads and child processes started by candidate code (any route: audit events, thread starts), at
  any time, candidate threads still alive after a call, and child processes of the worker alive after
  a call are `threads`. (Dispatch modes are per thread: work in a thread is invisible to the meter, so
  threads are refused outright.)
- exec/eval/compile and torch.compile called from the candidate's file, at any time, are
  `code-generator` (torch.compile then hands back its argument uncompiled: no generated code runs).
- Torch function or dispatch modes removed or left behind are `tamper`.

The guard runs in the candidate's own process, so a candidate that knows about it could try to switch
it off; the static checks (`agent.source.anticheat`) reject the means (torch._C, torch.overrides, frame
access), and the judge's value checks never depend on it (docs/anticheat.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from agent.evaluation import accounting
from agent.evaluation.accounting import WorkReport
from agent.records import Check

_CHILD_EVENTS = frozenset(
    [
        "os.fork",
        "os.forkpty",
        "os.system",
        "os.posix_spawn",
        "os.spawn",
        "os.exec",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
        "_thread.start_new_thread",
    ]
)


@dataclass
class GuardReport:
    """What the guards saw during one candidate call."""

    work: WorkReport = field(default_factory=WorkReport)
    side_streams: list[str] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    tamper: list[str] = field(default_factory=list)

    def checks(self, outputs: list[Any], module: str) -> list[Check]:
        work = self.work
        ops = ", ".join(
            f"{name} x{n}" + (f" (at {work.sites[name]})" if name in work.sites else "")
            for name, n in work.computed.most_common(6)
        )
        uncovered = accounting.uncovered_outputs(work, outputs, module)
        empty = accounting.empty_launches(work, module)
        out = [
            Check(
                name="code-generator",
                passed=not self.generated,
                detail="; ".join(self.generated) if self.generated else "no code generated at run time",
            ),
            Check(
                name="torch-compute",
                passed=not work.computed,
                detail=f"torch ops outside Triton kernels did work: {ops}"
                if work.computed
                else "no torch compute ops outside Triton kernels",
            ),
            Check(
                name="launch-covers-output",
                passed=not uncovered,
                detail=f"{', '.join(uncovered)} reached no launch of the candidate's kernels with a "
                "non-empty grid"
                + (f" (empty grid: {', '.join(empty)})" if empty else "")
                + ": a kernel must write every output"
                if uncovered
                else "every output went to a launch of the candidate's kernels",
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
                detail="; ".join(self.threads)
                if self.threads
                else "no threads or processes started by the candidate",
            ),
        ]
        if self.tamper:
            out.append(Check(name="tamper", passed=False, detail="; ".join(self.tamper)))
        return out


@dataclass
class _State:
    installed: bool = False
    active: bool = False
    watching: bool = False  # a candidate is loaded in this process
    report: GuardReport | None = None
    cuda: bool = False
    stream: int | None = None
    candidate_files: set[str] = field(default_factory=set)
    started_threads: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    allowed: frozenset[str] = accounting.STRICT_ALLOWED
    children: set[int] = field(default_factory=set)  # child processes before the candidate


STATE = _State()


def set_allowed_ops(names: frozenset[str]) -> None:
    """The ATen op names a candidate may call outside its kernels (a torch-op policy plugs in here;
    default: `accounting.STRICT_ALLOWED`)."""
    STATE.allowed = frozenset(names)


def _wrap_launch(cls: Any, entry: bool = True) -> None:
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

    cls.run = accounting.launch_boundary(run, entry)


def _audit(event: str, args: tuple) -> None:
    """Child processes and threads started by candidate code, by any route (audit events are raised by
    the interpreter itself); Triton's own compiler processes run inside a launch and are not counted."""
    if not STATE.watching or event not in _CHILD_EVENTS:
        return
    frame = accounting.candidate_frame(sys._getframe(1))
    if frame is None:
        return
    what = "a thread" if event.startswith("_thread") else "a child process"
    STATE.started_threads.append(f"the candidate started {what} ({event}) at {accounting.site(frame)}")


def _children() -> set[int]:
    """Child processes of this process (all its threads), from /proc."""
    out: set[int] = set()
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                out |= {int(p) for p in f.read().split()}
    except OSError:
        pass
    return out


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
    from triton.runtime import autotuner, jit

    _wrap_launch(jit.JITFunction)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        from triton.runtime import interpreter

        _wrap_launch(interpreter.InterpretedFunction)
    # The autotuner and heuristics run inside a launch; the callbacks they call are not trusted code.
    _wrap_launch(autotuner.Autotuner, entry=False)
    _wrap_launch(autotuner.Heuristics, entry=False)
    _wrap_threads()
    _wrap_generators()
    sys.addaudithook(_audit)
    STATE.installed = True


def begin_candidate(candidate_file: str) -> None:
    """A new candidate is about to be imported in this process."""
    STATE.candidate_files = {os.path.abspath(candidate_file)}
    STATE.started_threads.clear()
    STATE.generated.clear()
    accounting.snapshot_trusted()
    STATE.children = _children()
    STATE.watching = True


def end_candidate() -> None:
    STATE.watching = False


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


def _dispatch_modes() -> list[Any]:
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return list(_get_current_dispatch_mode_stack())


def _mode_stack_depth() -> int:
    try:
        return len(torch.overrides._get_current_function_mode_stack())
    except Exception:
        return 0


@contextlib.contextmanager
def guarded(report: GuardReport, device: str, thread_baseline: set[int]) -> Iterator[None]:
    """Run the body (one candidate call) under the guards; findings go to `report`."""
    depth = _mode_stack_depth()
    STATE.report = report
    STATE.cuda = device == "cuda"
    STATE.stream = torch.cuda.current_stream().cuda_stream if STATE.cuda else None
    STATE.active = True
    accounting.METER.append(report.work)
    start = time.thread_time()
    try:
        meter = accounting.WorkMeter(report.work, STATE.allowed)
        with meter:
            yield
            if meter not in _dispatch_modes():
                report.tamper.append("the candidate removed the judge's dispatch mode")
    finally:
        report.work.host_s = max(0.0, time.thread_time() - start - report.work.launch_s)
        accounting.METER.clear()
        STATE.active = False
        STATE.report = None
        if _mode_stack_depth() != depth:
            report.tamper.append("the candidate left a torch function mode active")
            while _mode_stack_depth() > depth:
                torch._C._pop_torch_function_stack()
        # Any thread or process the candidate started, at any time (import, __init__, this call), and any
        # still alive.
        found = STATE.started_threads + candidate_threads_alive(thread_baseline) + _new_children()
        report.threads += [t for t in found if t not in report.threads]
        report.generated += [g for g in STATE.generated if g not in report.generated]


def _new_children() -> list[str]:
    new = sorted(_children() - STATE.children)
    return [f"child process {pid} of the worker is alive after the call" for pid in new]


def threads_started_so_far() -> list[str]:
    """Threads the current candidate started at any time (import, __init__, forward)."""
    return list(STATE.started_threads)
