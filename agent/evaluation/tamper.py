"""The `tamper` check: the functions and torch flags the evaluation relies on are the same objects and
values after the candidate ran as before it was imported (`TamperWatch`)."""

from __future__ import annotations

from typing import Any

import torch

from agent.evaluation import triton_hooks
from agent.records import Check

_WATCHED = {
    "torch": "allclose isclose equal abs isnan isfinite isinf where empty empty_like "
    "use_deterministic_algorithms",
    "torch.Tensor": "__eq__ __ne__ __sub__ __abs__ abs copy_ clone double to reshape view contiguous max sum "
    "data_ptr untyped_storage nonzero",
    "torch.testing": "assert_close",
    "torch.cuda": "synchronize Event",
    "torch.cuda.Event": "record elapsed_time synchronize",
    "torch.nn.Module": "__call__ _call_impl state_dict load_state_dict",
    "time": "perf_counter time monotonic",
    "triton_hooks": "STATE start_recording stop_recording launch_modules select_config max_configs",
    "JITFunction": "run",
    "Autotuner": "run",
}
# Functions replaced lazily by PyTorch itself (torch._dynamo wraps torch.manual_seed on first import).
_LAZILY_REPLACED = {"torch.manual_seed"}
# The harness's own modules: every function and class method in them is watched.
_AGENT_MODULES = (
    "agent.evaluation.compare",
    "agent.evaluation.tensor_checks",
    "agent.evaluation.tamper",
    "agent.evaluation.judge",
    "agent.evaluation.judge_timing",
    "agent.evaluation.judge_draws",
    "agent.evaluation.verdicts",
    "agent.evaluation.candidate_session",
    "agent.evaluation.runners",
    "agent.evaluation.worker",
    "agent.evaluation.worker_setup",
    "agent.evaluation.guards",
    "agent.evaluation.accounting",
    "agent.evaluation.draws",
    "agent.evaluation.triton_hooks",
    "agent.problem",
    "agent.evaluation.candidate",
    "agent.records",
    "agent.evaluation.timing",
    "agent.evaluation.compare_kernel",
    "agent.evaluation.parallel_compile",
    "agent.evaluation.timing_sides",
    "agent.evaluation.timed_calls",
    "agent.evaluation.worker_timing",
    "agent.evaluation.retune",
    "agent.evaluation.gpu_memory",
)


def _class_attrs(cls: type) -> dict[str, Any]:
    """Every attribute of a class as stored (no descriptor binding, so values are stable), MRO included."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass))
    return out


def _module_attrs(label: str, module: Any) -> dict[str, Any]:
    snap: dict[str, Any] = {}
    for name, value in list(vars(module).items()):
        if callable(value) and not isinstance(value, type(torch)):
            snap[f"{label}.{name}"] = value
            if isinstance(value, type) and getattr(value, "__module__", None) == getattr(
                module, "__name__", None
            ):
                for attr, v in vars(value).items():
                    snap[f"{label}.{name}.{attr}"] = v
    return snap


def _watched_owners() -> dict[str, Any]:
    """The objects whose `_WATCHED` names are watched, by the labels `_WATCHED` gives them."""
    import time

    from triton.runtime import autotuner, jit

    owners = (
        torch,
        torch.Tensor,
        torch.testing,
        torch.cuda,
        torch.cuda.Event,
        torch.nn.Module,
        time,
        triton_hooks,
        jit.JITFunction,
        autotuner.Autotuner,
    )
    return dict(zip(_WATCHED, owners, strict=True))


def _harness_callables() -> dict[str, Any]:
    """The functions the evaluation relies on: `_WATCHED`, torch.Tensor's and nn.Module's attributes, the
    callables of torch and torch.nn.functional, and the harness's own modules (`_AGENT_MODULES`)."""
    import importlib
    import sys

    import torch.nn.functional

    owners = _watched_owners()
    snap = {
        f"{label}.{name}": getattr(owners[label], name, None)
        for label, names in _WATCHED.items()
        for name in names.split()
    }
    for name, value in _class_attrs(torch.Tensor).items():
        snap.setdefault(f"torch.Tensor.{name}", value)
    for name, value in _class_attrs(torch.nn.Module).items():
        snap.setdefault(f"torch.nn.Module.{name}", value)
    snap.update(_module_attrs("torch.nn.functional", torch.nn.functional))
    for name, value in list(vars(torch).items()):
        if callable(value) and not name.startswith("__") and f"torch.{name}" not in _LAZILY_REPLACED:
            snap.setdefault(f"torch.{name}", value)
    for modname in _AGENT_MODULES:
        module = sys.modules.get(modname) or importlib.import_module(modname)
        snap.update(_module_attrs(modname, module))
    return snap


def _entry_points() -> dict[str, Any]:
    """Where a candidate would start a thread or a torch function mode unseen by the guards."""
    import threading

    return {
        "threading.Thread.start": threading.Thread.start,
        "torch.overrides.TorchFunctionMode.__enter__": torch.overrides.TorchFunctionMode.__enter__,
        "torch.overrides.TorchFunctionMode.__exit__": torch.overrides.TorchFunctionMode.__exit__,
    }


def _flag_values() -> dict[str, Any]:
    """The torch flags and switches that change results or timings, and the TRITON_* environment (None for
    one that cannot be read)."""
    import torch.utils.deterministic

    flags = {
        "torch.backends.cuda.matmul.allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
        "torch.backends.cudnn.allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
        "torch.backends.cudnn.benchmark": lambda: torch.backends.cudnn.benchmark,
        "float32_matmul_precision": torch.get_float32_matmul_precision,
        "default dtype": lambda: str(torch.get_default_dtype()),
        "default device": lambda: str(torch.get_default_device()),
        "grad mode": torch.is_grad_enabled,
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled,
        "fill_uninitialized_memory": lambda: torch.utils.deterministic.fill_uninitialized_memory,
        "torch function modes": _function_modes,
        "global nn.Module hooks": _global_hooks,
        TRITON_ENV: triton_environment,
    }
    values: dict[str, Any] = {}
    for flag, read in flags.items():
        try:
            values[flag] = read()
        except Exception:
            values[flag] = None
    return values


class TamperWatch:
    """Snapshot before the candidate is imported; `check()` after it ran says what it replaced.

    Watched: the functions the evaluation relies on (`_WATCHED`), every attribute of torch.Tensor and
    nn.Module, the callables of torch and torch.nn.functional, the functions and classes of the harness
    (`agent.*`), the run-time guards, thread starts, torch flags and switches (TF32, deterministic mode,
    poisoning, default dtype and device, grad mode, torch function modes), TRITON_* environment variables,
    and any `extra` objects (in one-process evaluations, the reference module).

    Only names nothing in torch or triton replaces lazily are compared (torch.manual_seed, for one, is
    rewrapped when torch._dynamo is first imported, so it is not watched).
    """

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        self.extra = dict(extra or {})
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        snap = _harness_callables()
        for label, obj in self.extra.items():
            if isinstance(obj, type):
                snap.update({f"{label}.{k}": v for k, v in vars(obj).items()})
            else:
                snap.update(_module_attrs(label, obj))
        snap.update(_entry_points())
        snap.update(_flag_values())
        return snap

    def accept(self, names: list[str]) -> None:
        """Take the current values of `names` as the reference: the harness itself changed them (torch.compile
        of the baseline sets TRITON_CACHE_DIR, TRITON_PTXAS_PATH... the first time it compiles a kernel)."""
        now = self.snapshot()
        self.before.update({k: now.get(k) for k in names})

    def changed(self) -> list[str]:
        now = self.snapshot()
        return [k for k, v in self.before.items() if not _same(now.get(k), v)]

    def check(self) -> Check:
        changed = self.changed()
        if changed:
            shown = ", ".join(changed[:8]) + (f" (+{len(changed) - 8} more)" if len(changed) > 8 else "")
            return Check(name="tamper", passed=False, detail=f"the candidate replaced or changed {shown}")
        return Check(name="tamper", passed=True, detail="evaluation functions and torch flags untouched")


TRITON_ENV = "TRITON_* environment"


def triton_environment() -> str:
    import os

    return str(sorted((k, v) for k, v in os.environ.items() if "TRITON" in k))


def _global_hooks() -> str:
    """Hooks registered for every nn.Module (a forward hook there also runs on the reference's Model)."""
    from torch.nn.modules import module

    names = [n for n in vars(module) if n.startswith("_global_") and n.endswith("hooks")]
    return ", ".join(f"{n}: {len(getattr(module, n))}" for n in sorted(names))


def _function_modes() -> str:
    """The torch function modes active, but for torch.set_default_device's own (DeviceContext)."""
    modes = torch.overrides._get_current_function_mode_stack()
    return ", ".join(type(m).__qualname__ for m in modes if type(m).__name__ != "DeviceContext")


def _same(a: Any, b: Any) -> bool:
    return a is b or (isinstance(b, bool | str) and type(a) is type(b) and a == b)
