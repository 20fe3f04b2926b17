"""Work accounting for one candidate call: what ran, attributed by code, not by file name.

- Every ATen op at every depth goes through `WorkMeter` (a TorchDispatchMode): what a candidate's
  `__index__`, `__getitem__` or `__deepcopy__` does from inside `torch.tensor(seq)` or `x[obj]` is seen like
  any other op, since dispatch happens after the Python arguments are parsed. Object construction
  (`torch.device`, `torch.dtype`, `torch.Size`) and context managers that do no work (`torch.no_grad`) never
  reach dispatch.
- An op belongs to Triton, not to the candidate, only inside a launch (`launch_boundary`) and only when
  every Python frame between the op and the launch is trusted code: a frame whose globals are those of a
  module imported before the candidate, running code of that module's own file. A helper compiled under
  a file name in Triton's folder, or a `pre_hook`, `prune_configs_by` or `heuristics` callback run by
  Triton's autotuner, is the candidate's.
- The candidate's ops must be in the allowed set (`STRICT_ALLOWED`: allocation, views, fills, same-dtype
  same-device copies, scalar reads); a policy can pass another set of ATen op names (`allowed=`).
- Measured per call: the candidate's ops of every kind (a Python loop over `float(v)` grows with the
  input), and the thread's CPU time outside launches (numpy over tensor memory grows with the input);
  the judge compares both across input sizes (`agent.evaluation.judge`).
- Each launch records its grid (an empty grid does no work) and the storages of its tensor arguments,
  so an output no non-empty launch of the candidate's kernels received is reported.
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ALLOCATION = (
    "empty empty_like empty_strided new_empty new_empty_strided zeros zeros_like new_zeros ones ones_like "
    "new_ones full full_like new_full scalar_tensor arange lift_fresh lift_fresh_copy set_ resize_"
)
_VIEWS = (
    "view _unsafe_view _reshape_alias alias as_strided expand permute transpose t unsqueeze squeeze select "
    "slice split split_with_sizes chunk unbind narrow detach view_as_real view_as_complex unfold movedim "
    "diagonal"
)
_FILLS_AND_COPIES = "fill_ zero_ clone copy_ _to_copy contiguous _local_scalar_dense is_same_size"
# The strict contract: allocation, views, fills, same-dtype same-device copies and scalar reads.
STRICT_ALLOWED: frozenset[str] = frozenset(f"{_ALLOCATION} {_VIEWS} {_FILLS_AND_COPIES}".split())
# Allowed only when they keep dtype and device (a cast or a host round trip is work).
_COPIES = frozenset({"copy_", "_to_copy", "clone"})


def op_name(func: Any) -> str:
    """`aten.add.Tensor` -> `add`: the name a policy lists."""
    try:
        return str(func.overloadpacket.__name__)
    except AttributeError:
        return str(func)


def _same_kind(a: Any, b: Any) -> bool:
    return (
        not isinstance(a, torch.Tensor)
        or not isinstance(b, torch.Tensor)
        or (a.dtype == b.dtype and a.device == b.device)
    )


def op_allowed(name: str, args: tuple, result: Any, allowed: frozenset[str]) -> bool:
    if name not in allowed:
        return False
    if name in _COPIES and args:
        other = args[1] if name == "copy_" and len(args) > 1 else result
        return _same_kind(args[0], other)
    return True


# --- trusted code ---------------------------------------------------------------------------------------


@dataclass
class _Trust:
    modules: dict[int, str] = field(default_factory=dict)  # id(module globals) -> that module's file
    boundary_codes: set[Any] = field(default_factory=set)  # code objects of the launch wrappers
    depth: int = 0  # launches in progress


TRUST = _Trust()


def snapshot_trusted() -> None:
    """Every module imported so far is trusted code (called before a candidate is imported)."""
    TRUST.modules = {
        id(vars(m)): str(getattr(m, "__file__", None) or "")
        for m in list(sys.modules.values())
        if m is not None and hasattr(m, "__dict__")
    }


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(
        {os.path.realpath(paths[k]) + os.sep for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    )


_INSTALLED = _installed_roots()


def _late_module(g: dict) -> str | None:
    """The file of a module of an installed package imported after the snapshot (torch and Triton import
    parts of themselves lazily) whose globals `g` are, else None."""
    module = sys.modules.get(str(g.get("__name__")))
    path = str(getattr(module, "__file__", None) or "")
    if module is None or vars(module) is not g or not os.path.realpath(path).startswith(_INSTALLED):
        return None
    TRUST.modules[id(g)] = path
    return path


def trusted_frame(frame: Any) -> bool:
    g = frame.f_globals
    path = TRUST.modules.get(id(g))
    if path is None:
        path = _late_module(g)
        if path is None:
            return False
    return not path or frame.f_code.co_filename == path


def candidate_frame(frame: Any) -> Any:
    """The innermost untrusted frame on the stack from `frame` out, or None when there is none or a launch
    comes first (the work is Triton's or the harness's). During a call the candidate's forward is on the
    stack, so everything outside launches is the candidate's."""
    f = frame
    while f is not None:
        if TRUST.depth and f.f_code in TRUST.boundary_codes:
            return None
        if not trusted_frame(f):
            return f
        f = f.f_back
    return None


def site(frame: Any) -> str:
    return f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}" if frame is not None else "?"


# --- the meter ------------------------------------------------------------------------------------------


@dataclass
class Launch:
    kernel: str
    module: str
    programs: int | None  # None: the grid was not seen
    storages: set[int]


@dataclass
class WorkReport:
    """What one call did outside and inside Triton launches."""

    computed: Counter[str] = field(default_factory=Counter)  # disallowed ops, by name
    sites: dict[str, str] = field(default_factory=dict)
    ops: int = 0  # every op of the candidate's, allowed or not
    launches: list[Launch] = field(default_factory=list)
    launch_s: float = 0.0  # thread CPU time inside launches
    host_s: float = 0.0  # thread CPU time of the call outside launches


class WorkMeter(TorchDispatchMode):
    """Attributes every ATen op of a candidate call; records the candidate's work."""

    def __init__(self, report: WorkReport, allowed: frozenset[str] = STRICT_ALLOWED):
        super().__init__()
        self.report = report
        self.allowed = allowed

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        result = func(*args, **(kwargs or {}))
        frame = candidate_frame(sys._getframe(1))
        if frame is not None:
            self.report.ops += 1
            name = op_name(func)
            if not op_allowed(name, args, result, self.allowed):
                self.report.computed[name] += 1
                self.report.sites.setdefault(name, site(frame))
        return result


METER: list[WorkReport] = []  # the report of the call in progress (empty between calls)


def _storages(values: Iterable[Any]) -> set[int]:
    out = set()
    for v in values:
        if isinstance(v, torch.Tensor):
            with contextlib.suppress(Exception):
                out.add(v.untyped_storage().data_ptr())
    return out


def _programs(grid: Any) -> int | None:
    try:
        dims = (*tuple(grid), 1, 1, 1)
        return int(dims[0]) * int(dims[1]) * int(dims[2])
    except Exception:
        return None


def launch_boundary(original: Any, entry: bool) -> Any:
    """Wrap a Triton launch entry point (`entry`: a JIT launch whose grid and arguments are recorded)."""

    def launch(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
        report = METER[-1] if METER else None
        record: Launch | None = None
        if report is not None and entry and not kwargs.get("warmup", False):
            fn = getattr(self, "fn", None)
            record = Launch(
                kernel=getattr(fn, "__name__", type(self).__name__),
                module=getattr(fn, "__module__", "?"),
                programs=None,
                storages=_storages([*args, *kwargs.values()]),
            )
            report.launches.append(record)
            grid = kwargs.get("grid")
            if callable(grid):

                def seen(meta: Any, _grid: Any = grid, _record: Launch = record) -> Any:
                    dims = _grid(meta)
                    _record.programs = _programs(dims)
                    return dims

                kwargs["grid"] = seen
            elif grid is not None:
                record.programs = _programs(grid)
        TRUST.depth += 1
        start = time.thread_time()
        try:
            return _original(self, *args, **kwargs)
        finally:
            TRUST.depth -= 1
            if report is not None and TRUST.depth == 0:
                report.launch_s += time.thread_time() - start

    TRUST.boundary_codes.add(launch.__code__)
    launch._ncu_agent_guard = True  # type: ignore[attr-defined]
    return launch


def uncovered_outputs(report: WorkReport, outputs: list[Any], module: str) -> list[str]:
    """Outputs no launch of the candidate's own kernels with a non-empty grid received."""
    covered: set[int] = set()
    for launch in report.launches:
        if launch.module == module and launch.programs != 0:
            covered |= launch.storages
    out = []
    for i, o in enumerate(outputs):
        if isinstance(o, torch.Tensor) and o.numel() > 0 and not _storages([o]) <= covered:
            out.append(f"output {i}")
    return out


def empty_launches(report: WorkReport, module: str) -> list[str]:
    return sorted({la.kernel for la in report.launches if la.module == module and la.programs == 0})
