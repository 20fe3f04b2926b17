"""Re-tuning autotuned kernels with the judge's own timing, so a candidate's time does not depend on the
process it ran in.

Triton's autotuner benchmarks each config once, one after the other, early in a fresh process; when two
configs are close, which one wins changes from process to process (on the H200, matmul_fp16's starting
kernel timed 1.63 ms in some fresh processes and 1.87 ms in others: docs/measurements.md). Before timing,
the judge therefore times every config of each autotuned kernel that ran, interleaved round by round with
the L2 flushed before each call (`agent.evaluation.timing.time_interleaved`; a config drops out once its
median's
95% interval lies wholly above the fastest one's), and pins the config with the lowest median in the
autotuner's cache. It does so after the first seed's checks, which ran with the autotuner's
own choice: a config the judge switches to is first checked against that seed's reference (`check`), and
the other seeds and the extra draws then check it at that shape. One that gives wrong results is the
candidate's bug (another process might pick it), and the caller rejects the candidate.

Since the judge makes the choice, the autotuner's own benchmark is cut short in the GPU worker
(`agent.evaluation.triton_hooks.quick_bench`: a few calls per config instead of ~125 ms of them).

Only configs the autotuner could run are tried: those with a finite time in its own benchmark
(`configs_timings`), or, without one (a disk-cache hit), every config, each run once before timing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from agent.evaluation import timing
from agent.records import RetuneNote

TARGET_S = 0.6  # about how long re-tuning may take per autotuned kernel, at most
MIN_REPS, MAX_REPS = 8, 30
PRECISION = 0.01  # configs whose medians are known to within +-1% of each other are as good as equal


class _KeySpy(dict):  # type: ignore[type-arg]
    """An autotuner's cache that remembers which keys were read (the keys the timed call used)."""

    def __init__(self, data: dict[Any, Any]):
        super().__init__(data)
        self.used: list[Any] = []

    def __getitem__(self, key: Any) -> Any:
        if key not in self.used:
            self.used.append(key)
        return super().__getitem__(key)


def config_dict(config: Any) -> dict[str, Any]:
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


def kernel_name(tuner: Any) -> str:
    return (getattr(tuner, "base_fn", None) or tuner.fn).__name__


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def used_keys(tuners: list[Any], call: Callable[[], Any]) -> list[tuple[Any, Any]]:
    """(tuner, key) for each autotuned kernel with several configs that `call` ran, in the order used."""
    spies = []
    for tuner in tuners:
        if len(getattr(tuner, "configs", [])) > 1 and isinstance(getattr(tuner, "cache", None), dict):
            spy = _KeySpy(tuner.cache)
            tuner.cache = spy
            spies.append((tuner, spy))
    try:
        call()
        _sync()
    finally:
        for tuner, spy in spies:
            tuner.cache = dict(spy)
    return [(tuner, key) for tuner, spy in spies for key in spy.used if key in tuner.cache]


def _runnable(tuner: Any, key: Any, call: Callable[[], Any]) -> tuple[list[Any], list[str]]:
    timings = getattr(tuner, "configs_timings", None) or {}
    if timings:
        ok = [c for c in tuner.configs if _finite(timings.get(c))]
        skipped = [f"{config_dict(c)}: the autotuner could not run it" for c in tuner.configs if c not in ok]
        return ok, skipped
    ok, skipped = [], []
    for config in tuner.configs:
        tuner.cache[key] = config
        try:
            call()
            _sync()
            ok.append(config)
        except Exception as e:
            skipped.append(f"{config_dict(config)}: {type(e).__name__}: {str(e)[:200]}")
    return ok, skipped


def _finite(t: Any) -> bool:
    if t is None:
        return False
    values = t if isinstance(t, list | tuple) else [t]
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def retune(
    tuners: list[Any],
    call: Callable[[], Any],
    check: Callable[[Any], str | None],
) -> tuple[list[RetuneNote], str | None]:
    """Re-tune each (tuner, key) the call uses; returns the notes and, if a switched-to config gives wrong
    results, what `check` said about it (the configs are then left as the autotuner chose them)."""
    notes: list[RetuneNote] = []
    for tuner, key in used_keys(tuners, call):
        original = tuner.cache[key]
        ok, skipped = _runnable(tuner, key, call)
        tuner.cache[key] = original
        if len(ok) < 2:
            continue

        def pinned(config: Any, tuner: Any = tuner, key: Any = key) -> Callable[[], Any]:
            def run() -> Any:
                tuner.cache[key] = config
                return call()

            return run

        fns = {str(i): pinned(c) for i, c in enumerate(ok)}
        stats = timing.time_interleaved(
            fns,
            reps=MIN_REPS,
            warmup=1,
            max_s=TARGET_S,
            max_reps=MAX_REPS,
            still_open=timing.until_fastest_known(PRECISION),
        )
        reps = max(len(s.times_ms) for s in stats.values())
        medians = [stats[str(i)].median_ms for i in range(len(ok))]
        best = ok[min(range(len(ok)), key=medians.__getitem__)]
        if best is not original:
            tuner.cache[key] = best
            problem = check(call())
            if problem is not None:
                tuner.cache[key] = original
                return notes, f"autotune config {config_dict(best)} of {kernel_name(tuner)}: {problem}"
        tuner.cache[key] = best
        notes.append(
            RetuneNote(
                kernel=kernel_name(tuner),
                autotuner_choice=config_dict(original),
                chosen=config_dict(best),
                medians_ms=medians,
                configs=[config_dict(c) for c in ok],
                reps=reps,
                skipped=skipped,
            )
        )
    return notes, None
