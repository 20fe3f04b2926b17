"""Hooks into Triton's runtime, installed in a worker process before a candidate is imported.

- Launch recording: which Triton kernels ran, how often, and from which module. This is how the
  evaluator knows the work was done by the candidate's own kernels and which kernels to profile.
- Quick autotuning (`STATE.quick_autotune`, set by the GPU judge when it re-tunes afterwards): autotuners
  that bring no benchmark of their own get `quick_bench`.
- Autotune under the interpreter: `@triton.autotune` benchmarks its configs, which the interpreter
  cannot do ("0 active drivers"). Under the interpreter each autotuned kernel instead runs the config
  selected by `select_config(k)`, so the evaluator can check every config for correctness in turn.
- The rest of what the interpreter lacks (libdevice, float scalars' `.to()`, driver queries):
  agent/evaluation/interpreter_shims.py.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _State:
    recording: bool = False
    launches: Counter[str] = field(default_factory=Counter)
    modules: dict[str, str] = field(default_factory=dict)
    config_index: int = 0
    autotuners: list[Any] = field(default_factory=list)
    quick_autotune: bool = False  # see quick_bench


STATE = _State()


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _kernel_fn(kernel: Any) -> Any:
    return getattr(kernel, "fn", None)


def _record(kernel: Any, warmup: bool) -> None:
    if STATE.recording and not warmup:
        fn = _kernel_fn(kernel)
        name = getattr(fn, "__name__", type(kernel).__name__)
        STATE.launches[name] += 1
        STATE.modules[name] = getattr(fn, "__module__", "?")


def install() -> None:
    """Patch Triton once per process. Must run before any candidate module is imported."""
    if getattr(install, "done", False):
        return
    from triton.runtime import autotuner, jit

    targets: list[Any] = [jit.JITFunction]
    if interpreting():
        from triton.runtime import interpreter

        targets.append(interpreter.InterpretedFunction)
    for cls in targets:
        original = cls.run

        def run(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            _record(self, kwargs.get("warmup", False))
            return _original(self, *args, **kwargs)

        cls.run = run

    original_init = autotuner.Autotuner.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        STATE.autotuners.append(self)
        if STATE.quick_autotune and getattr(self, "_do_bench", None) is None:
            self._do_bench = quick_bench

    autotuner.Autotuner.__init__ = init
    if interpreting():
        from agent.evaluation import interpreter_shims

        autotuner.Autotuner.run = _interpreted_autotune_run
        interpreter_shims.install()  # libdevice, float scalars, driver queries: what real kernels use
    install.done = True  # type: ignore[attr-defined]


def _interpreted_autotune_run(self: Any, *args: Any, **kwargs: Any) -> Any:
    self.nargs = dict(zip(self.arg_names, args, strict=False))
    config = self.configs[STATE.config_index % len(self.configs)]
    self.best_config = config
    if config.pre_hook is not None:
        config.pre_hook({**self.nargs, **kwargs, **config.all_kwargs()})
    extra = {k: v for k, v in config.all_kwargs().items() if k in config.kwargs}
    ret = self.fn.run(*args, **kwargs, **extra)
    self.nargs = None
    return ret


def quick_bench(kernel_call: Any, quantiles: Any = None) -> Any:
    """The autotuner's benchmark when the judge re-tunes afterwards (agent/evaluation/retune.py): one call
    (it compiles,
    and fails here if the config cannot run) and one timed call per config instead of ~125 ms of calls,
    since the judge's interleaved timing makes the choice anyway."""
    from agent.evaluation import timing

    ms = timing.median_ms(kernel_call, reps=1, warmup=1)
    return [ms] * len(quantiles) if quantiles else ms


def max_configs() -> int:
    """The most configs any autotuned kernel of this process has (1 when none is autotuned)."""
    return max((len(a.configs) for a in STATE.autotuners), default=1)


def select_config(index: int) -> None:
    STATE.config_index = index


def start_recording() -> None:
    STATE.launches.clear()
    STATE.recording = True


def stop_recording() -> dict[str, int]:
    STATE.recording = False
    return dict(STATE.launches)


def launch_modules() -> dict[str, str]:
    """Kernel name to the module that defined it, for every kernel recorded so far."""
    return dict(STATE.modules)


def chosen_configs() -> dict[str, dict[str, Any]]:
    """Per autotuned kernel, the config its autotuner picked last (what the timed run used)."""
    out: dict[str, dict[str, Any]] = {}
    for tuner in STATE.autotuners:
        best = getattr(tuner, "best_config", None)
        if best is None:
            continue
        name = getattr(tuner, "base_fn", tuner.fn).__name__
        out[name] = {**best.kwargs, "num_warps": best.num_warps, "num_stages": best.num_stages}
    return out
