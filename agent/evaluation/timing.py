"""GPU timing, run inside the worker process (see docs on why: ../shared/research/eval_rigor.md §1, §4).

- CUDA events on the current stream, one window per call, one synchronize per chunk of rounds.
- L2 flushed before every timed call by zeroing a 256 MiB buffer (as `triton.testing.do_bench`),
  outside the window: the numbers are cold-cache numbers.
- Candidate and baselines interleaved call by call (ABCABC...), so drift in clocks or temperature
  hits all of them alike.
- Statistics: every time is kept; `TimingStats` reports the median and IQR.
- Sequential: a measurement takes at least `MIN_WINDOW_S` (and the request's rounds), then goes on in
  chunks until every median's distribution-free 95% interval is within +-`PRECISION`, or `BUDGET_S` is
  spent; re-tuning drops a config once its interval lies wholly above the fastest one's.
- The roofline is built from ceilings measured in the same process (a device-to-device copy, and an
  fp16 matmul for problems that state FLOPs), not datasheet numbers.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.evaluation.timing_sides import (
    TURN_ROUNDS,
    CudaClock,
    LocalSide,
    RemoteSide,
    Side,
    clock_for,
    in_turns,
)
from agent.records import Check, Timings, TimingStats

METHOD = "cuda-events on the current stream, L2 flushed (256 MiB zeroed) before each call, interleaved"
SPLIT_NOTE = (
    "; the candidate timed in its own process, the baselines in the judge's, "
    f"in turns of {TURN_ROUNDS} rounds"
)
GRAPH_METHOD = "cuda-graph replays timed with cuda-events, L2 flushed before each replay, interleaved"
BUDGET_S = 1.0  # a measurement takes at most as many rounds as fit in about this long
MIN_WINDOW_S = 0.25  # and at least as many as fit in this long (and the request's reps)
PRECISION = 0.005  # in between, rounds go on until every median is known to within +-0.5% (95%)
MAX_REPS = 500
NOISE_THRESHOLD = 0.02  # halves of one measurement disagreeing by more: measure again, then mark it noisy


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    reps: int,
    warmup: int = 3,
    graphs: bool = False,
    max_s: float | None = None,
    max_reps: int | None = None,
    min_s: float = 0.0,
    still_open: Callable[[dict[str, TimingStats]], list[str]] | None = None,
) -> dict[str, TimingStats]:
    """Time each fn `reps` times, interleaved round by round, with a cold L2 before every call.

    `graphs`: time replays of a CUDA graph of each fn (for launch-bound kernels); the L2 flush stays
    outside the graphs. Compare graph times only with graph times. The rest as in `time_sides`.
    """
    side = LocalSide(fns, CudaClock(), graphs)
    method = GRAPH_METHOD if graphs else METHOD
    return time_sides([side], reps, warmup, max_s, max_reps, min_s, still_open, method)


def time_sides(
    sides: list[Side],
    reps: int,
    warmup: int = 3,
    max_s: float | None = None,
    max_reps: int | None = None,
    min_s: float = 0.0,
    still_open: Callable[[dict[str, TimingStats]], list[str]] | None = None,
    method: str = METHOD,
) -> dict[str, TimingStats]:
    """Time the fns of every side `reps` times, interleaved round by round (in turns across processes:
    agent/evaluation/timing_sides.py), with a cold cache before every call.

    `max_s`: as many rounds as fit in about `max_s` seconds (judged from one timed round after the
    warm-up), at least `reps` and at most `max_reps`: short kernels are then measured over a window long
    enough that clock changes average out. `still_open`: a sequential measurement (`Rounds`): after the
    first `reps` rounds and at least `min_s` seconds, rounds go on in chunks only for the fns it returns
    (none: the measurement is done).
    """
    for side in sides:
        side.warm(warmup)
    round_s = sum(side.round_s() for side in sides) if max_s is not None or min_s else None
    plan = Rounds.planned(reps, round_s, max_s, max_reps, min_s)
    names = [name for side in sides for name in side.names]
    times = plan.run(names, in_turns(sides), still_open)
    return {name: TimingStats(times_ms=t, method=method) for name, t in times.items()}


@dataclass
class Rounds:
    """How many interleaved rounds a measurement takes: `first` at once, then, while `still_open` names
    fns, chunks of `chunk` for those fns only, up to `limit` rounds in all."""

    first: int
    limit: int
    chunk: int

    @classmethod
    def planned(
        cls, reps: int, round_s: float | None, max_s: float | None, max_reps: int | None, min_s: float
    ) -> Rounds:
        fit = (lambda s: int(s / max(round_s, 1e-9))) if round_s is not None else (lambda s: 0)
        limit = reps if max_s is None else max(reps, min(max_reps or reps, fit(max_s)))
        first = min(limit, max(reps, fit(min_s)))
        return cls(first=first, limit=limit, chunk=max(5, reps // 2))

    def run(
        self,
        names: list[str],
        timed: Callable[[list[str], int], dict[str, list[float]]],
        still_open: Callable[[dict[str, TimingStats]], list[str]] | None,
    ) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {name: [] for name in names}
        done = 0
        open_names = list(names)
        while open_names and done < self.limit:
            rounds = (self.first if done == 0 else self.chunk) if still_open else self.limit
            rounds = min(rounds, self.limit - done)
            for name, t in timed(open_names, rounds).items():
                times[name].extend(t)
            done += rounds
            if still_open is not None:
                open_names = still_open({name: TimingStats(times_ms=times[name]) for name in open_names})
        return times


def median_halfwidth(times_ms: list[float]) -> float:
    """Half the width of a distribution-free ~95% confidence interval of the median (order statistics
    n/2 -+ sqrt(n)), relative to the median; inf below 6 samples."""
    n = len(times_ms)
    if n < 6:
        return math.inf
    x = sorted(times_ms)
    k = max(0, int(n / 2 - math.sqrt(n)))
    width, median = x[n - 1 - k] - x[k], statistics.median(x)
    if median <= 0:
        return 0.0 if width == 0 else math.inf
    return width / 2 / median


def until_precise(precision: float) -> Callable[[dict[str, TimingStats]], list[str]]:
    """All fns go on (interleaved) until every median is known to within +-`precision`."""

    def still_open(stats: dict[str, TimingStats]) -> list[str]:
        precise = all(median_halfwidth(s.times_ms) <= precision for s in stats.values())
        return [] if precise else list(stats)

    return still_open


def until_fastest_known(precision: float) -> Callable[[dict[str, TimingStats]], list[str]]:
    """For choosing the fastest: a fn whose interval lies wholly above the fastest one's drops out; the
    measurement ends when one is left, or when those left are all known to within +-`precision`."""

    def still_open(stats: dict[str, TimingStats]) -> list[str]:
        half = {name: median_halfwidth(s.times_ms) for name, s in stats.items()}
        bounds = {
            name: (s.median_ms * (1 - half[name]), s.median_ms * (1 + half[name]))
            if math.isfinite(half[name])
            else (-math.inf, math.inf)
            for name, s in stats.items()
        }
        best_high = min(high for _, high in bounds.values())
        left = [name for name, (low, _) in bounds.items() if low <= best_high]
        return [] if len(left) <= 1 or all(half[n] <= precision for n in left) else left

    return still_open


def drift(stats: TimingStats) -> float:
    """Relative difference between the medians of the first and the second half of the reps."""
    half = len(stats.times_ms) // 2
    if half < 2:
        return 0.0
    a, b = statistics.median(stats.times_ms[:half]), statistics.median(stats.times_ms[half:])
    return abs(a - b) / min(a, b)


def noisy(stats: dict[str, TimingStats], threshold: float = NOISE_THRESHOLD) -> list[str]:
    """The timed functions whose two halves disagree by more than `threshold`."""
    return [f"{name} {drift(s):.1%}" for name, s in stats.items() if drift(s) > threshold]


def median_ms(fn: Callable[[], Any], reps: int = 10, warmup: int = 2) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    pairs = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in pairs)


def measure_copy_bandwidth(nbytes: int = 1024**3, reps: int = 10) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").fill_(1.0)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), reps)
    return 2 * nbytes / (ms * 1e-3) / 1e9


SUSTAIN_S = 0.2  # matmuls run this long before the rate is timed


def measure_matmul_tflops(n: int = 8192, reps: int = 20, sustain_s: float = SUSTAIN_S) -> float:
    """Dense fp16 matmul throughput in TFLOP/s (n x n x n, torch.mm), sustained: timed after ~`sustain_s`
    of matmuls, where the power limit holds the clocks while a compute-bound kernel runs (10 calls after 2
    warm-ups read 574 to 717 TFLOP/s across one run's evaluations on an H200: docs/measurements.md)."""
    import torch

    a = torch.randn(n, n, dtype=torch.float16, device="cuda")
    b = torch.randn(n, n, dtype=torch.float16, device="cuda")
    out = torch.empty(n, n, dtype=torch.float16, device="cuda")
    warmup = 2
    if sustain_s > 0:
        call_ms = median_ms(lambda: torch.mm(a, b, out=out), 3)
        warmup = max(warmup, int(sustain_s * 1e3 / max(call_ms, 1e-3)))
    ms = median_ms(lambda: torch.mm(a, b, out=out), reps, warmup=warmup)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def roofline_ms(
    bytes_moved: float, bw_gbps: float, flops: float | None = None, tflops: float | None = None
) -> float:
    """The floor on one call's time: the larger of moving the bytes and doing the FLOPs."""
    t = bytes_moved / (bw_gbps * 1e9) * 1e3
    if flops is not None and tflops:
        t = max(t, flops / (tflops * 1e12) * 1e3)
    return t


def compile_baseline(reference: Callable[..., Any], inputs: list[Any]) -> tuple[Any, str | None]:
    """torch.compile of the reference, compiled now (its first call) so that a failure is the baseline's and
    not the timing's: (compiled, None), or (None, the error)."""
    import torch

    try:
        torch._dynamo.reset()
        compiled = torch.compile(reference)
        with torch.no_grad():
            compiled(*inputs)
        torch.cuda.synchronize()
        return compiled, None
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"[:2000]


def time_models(
    candidate: Callable[..., Any] | Side,
    reference: Callable[..., Any],
    inputs: list[Any],
    *,
    reps: int,
    baselines: bool = True,
    bytes_moved: int,
    flops: float | None = None,
    graphs: bool = False,
    compiled: tuple[Any, str | None] | None = None,
    device: str = "cuda",
) -> Timings:
    """Candidate, eager and torch.compile of the reference, interleaved, plus the roofline. `candidate`: a
    callable here, or its worker's `RemoteSide` (the split layout). `compiled`: `compile_baseline`'s result
    kept by a warm process (None: compiled now). `device` "cpu": the host clock, no roofline (tests)."""
    import torch

    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
    remote = isinstance(candidate, RemoteSide)
    with torch.no_grad():
        sides, compile_error = _sides(candidate, reference, inputs, baselines, compiled, device, graphs)
        measure = functools.partial(
            time_sides,
            sides,
            reps,
            max_s=BUDGET_S,
            max_reps=MAX_REPS,
            min_s=MIN_WINDOW_S,
            still_open=until_precise(PRECISION),
            method=(GRAPH_METHOD if graphs else METHOD) + (SPLIT_NOTE if remote else ""),
        )
        stats = measure(warmup=3)
        unsteady = noisy(stats)
        if unsteady:  # measure once more; keep the second measurement, and say if it is still unsteady
            stats = measure(warmup=1)
            unsteady = noisy(stats)
    bw = measure_copy_bandwidth() if cuda else None
    tflops = measure_matmul_tflops() if flops and cuda else None
    return Timings(
        candidate=stats["candidate"],
        eager=stats.get("eager"),
        compiled=stats.get("compiled"),
        compile_error=compile_error,
        copy_bandwidth_gbps=bw,
        bytes_moved=bytes_moved,
        roofline_ms=roofline_ms(bytes_moved, bw, flops, tflops) if bw else None,
        device_name=torch.cuda.get_device_name() if cuda else "cpu (host clock)",
        mode="cudagraph" if graphs else "events",
        layout="split" if remote else "one-process",
        noisy=bool(unsteady),
        noise_detail=(
            f"medians of the two halves of the reps disagree beyond {NOISE_THRESHOLD:.0%} twice: "
            + ", ".join(unsteady)
        )
        if unsteady
        else "",
    )


def _sides(
    candidate: Callable[..., Any] | Side,
    reference: Callable[..., Any],
    inputs: list[Any],
    baselines: bool,
    compiled: tuple[Any, str | None] | None,
    device: str,
    graphs: bool,
) -> tuple[list[Side], str | None]:
    """Who is timed where: this process's fns (the candidate unless its worker's `RemoteSide` times it, and
    the baselines) on the device's clock, then the worker's side; torch.compile's failure, if any, second."""
    remote = candidate if isinstance(candidate, RemoteSide) else None
    local: dict[str, Callable[[], Any]] = {}
    if remote is None:
        local["candidate"] = lambda: candidate(*inputs)  # type: ignore[operator]
    compile_error = None
    if baselines:
        local["eager"] = lambda: reference(*inputs)
        fn, compile_error = compiled if compiled is not None else compile_baseline(reference, inputs)
        if fn is not None:
            local["compiled"] = lambda: fn(*inputs)
    sides: list[Side] = [LocalSide(local, clock_for(device), graphs)] if local else []
    return sides + ([remote] if remote is not None else []), compile_error


def plausibility(t: Timings) -> Check:
    """A warning (never a failure) when the candidate beats the measured floor or eager by over 10x."""
    notes = []
    if t.pct_roofline is not None and t.pct_roofline > 110:
        notes.append(f"faster than the measured floor ({t.pct_roofline:.0f}% of roofline)")
    if t.speedup_eager is not None and t.speedup_eager > 10:
        notes.append(f"{t.speedup_eager:.1f}x faster than eager")
    if notes:
        detail = (
            "warning: " + "; ".join(notes) + ": check for work off the timed stream or a wrong byte count"
        )
        return Check(name="timing-plausible", passed=True, detail=detail)
    return Check(name="timing-plausible", passed=True, detail="within the measured floor")
