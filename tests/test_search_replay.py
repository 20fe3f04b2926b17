"""The built-in search replayed on times measured on the H200 (Kernel Tuner's "simulation mode").

tests/fixtures/sweeps/l1_norm_h200.json holds every point of the micro space of kernels/l1_norm, timed
with do_bench in one process on an H200 (2026-11-26, scripts/bench_micro_sweep.py). Here the real loop and
the real search run with evaluation and profiling replaced by those numbers, so CI checks on a CPU that the
search reaches the sweep's best with fewer evaluations than the sweep.
"""

import json
import math
from pathlib import Path

import pytest
from fakes import FakeProfiler, Quiet, fake_settings

import agent.loop as loop
from agent.config import LoopPolicy
from agent.problem import load_problem
from agent.prompt.stages import load_stage
from agent.proposers.search import SearchProposer
from agent.records import EvalResult, Status, Timings, TimingStats
from agent.source.variants import site_stages
from agent.store import Store

SWEEP = json.loads((Path(__file__).parent / "fixtures" / "sweeps" / "l1_norm_h200.json").read_text())
KERNEL = "l1_norm_kernel_autotune"
START_METRICS = {KERNEL: [{"sm__warps_active.avg.pct_of_peak_sustained_active": 61.08}]}


def _label(source: str, start: str) -> str:
    if source == start:
        return "start"
    import re

    warps = set(re.findall(r"num_warps=(\d+)", source.split("@triton.jit", 2)[1]))
    (stages,) = set(site_stages(source, KERNEL))
    (w,) = warps
    return f"{KERNEL}: num_warps={w} num_stages={stages}"


@pytest.fixture
def replay(tmp_path):
    spec = load_problem("kernels/l1_norm")
    start = spec.kernel_path.read_text()
    calls: list[str] = []

    def fake_evaluate(problem, source, device, **kw):
        label = _label(source, start)
        calls.append(label)
        t = SWEEP["times"]
        return EvalResult(
            status=Status.ACCEPTED,
            kernels_launched={KERNEL: 1},
            timings=Timings(
                candidate=TimingStats(times_ms=t[label]["rounds_ms"]),
                eager=TimingStats(times_ms=t["eager"]["rounds_ms"]),
                compiled=TimingStats(times_ms=t["torch.compile"]["rounds_ms"]),
                roofline_ms=4.02,
            ),
        )

    def run(strategy: str):
        stage = load_stage("micro")
        store = Store.open_dir(tmp_path)
        settings = fake_settings(stage, tmp_path, fake_evaluate, FakeProfiler(START_METRICS))
        run_id = store.start_run("l1_norm", "cuda", "H200", "search", None, {})
        out = loop.run_stage(spec, start, SearchProposer(stage, strategy), store, run_id, settings, Quiet())
        return out, list(calls)

    return run


def test_coordinate_search_finds_the_sweeps_best_with_half_the_evaluations(replay):
    out, calls = replay("coordinate")
    best_ms = SWEEP["times"][SWEEP["best"]]["median_ms"]
    assert out.best.median_ms == pytest.approx(best_ms, rel=0.005)  # within noise of the sweep's best
    assert out.best.median_ms < SWEEP["times"]["start"]["median_ms"] * 0.95
    assert len(calls) - 1 <= SWEEP["space_size"] // 2  # 6 tries (4 warps + 2 stages) against 12


def test_exhaustive_search_tries_the_whole_space(replay):
    out, calls = replay("exhaustive")
    assert len(calls) - 1 == SWEEP["space_size"]
    assert out.best.median_ms == pytest.approx(SWEEP["times"][SWEEP["best"]]["median_ms"], rel=0.005)


# ---------------------------------------------------------------- the tiling stage
#
# tests/fixtures/sweeps/PROBLEM_tiling_h200.json holds every point of the tiling space of a bundled problem
# (l1_norm: 12 variants, fused_elementwise: 14, layernorm: 9), timed with do_bench in one process on an
# H200 (2026-11-26, `python scripts/bench_micro_sweep.py kernels/PROBLEM --stage tiling --out
# tests/fixtures/sweeps/PROBLEM_tiling_h200.json`, 50-65 s each). The search is replayed on each, and on a
# synthetic table for l1_norm (which also has a variant that fails to compile). Record a sweep again after
# changing the tiling space: the replay names the label it lacks.

SWEEPS = Path(__file__).parent / "fixtures" / "sweeps"
RECORDED = sorted(p.name.removesuffix(".json") for p in SWEEPS.glob("*_tiling_*.json"))
DRAM = "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed"
SPILLING = "derived__local_spilling_requests_pct"
MIN_GAIN = LoopPolicy().min_gain  # a new best must beat the old by this much: the replay's tolerance


def _tiling_space(problem: str, kernel: str):
    from agent.proposers.tiling_search import TilingSearch

    start = load_problem(f"kernels/{problem}").kernel_path.read_text()
    return TilingSearch(load_stage("tiling")).space(start, kernel)


def synthetic_tiling_sweep() -> dict:
    """A cost table over the real tiling space of kernels/l1_norm, in the format bench_micro_sweep.py
    --stage tiling writes.

    A config (BLOCK_SIZE_D, num_warps) costs a memory-bound 6.55 ms times a penalty for its elements per
    thread (best at 32: fewer leave loads in flight unused, more cost registers) and for loop trips over the
    65535-wide rows (small blocks); an autotune list costs its best config (the autotuner picks it). The
    largest list with 16 warps fails to compile (out of resources), as a BLOCK that breaks a kernel would.
    """
    space = _tiling_space("l1_norm", KERNEL)

    def config_ms(block: int, warps: int) -> float:
        per_thread = block / (32 * warps)
        return 6.55 * (1 + 0.06 * math.log2(per_thread / 32) ** 2) * (1 + 12 / block)

    times, failed = {}, {}
    for point in space.points():
        blocks, warps = space.values(point)
        label = "start" if point == space.origin else space.label(point)
        if max(blocks) == 8192 and max(warps) == 16:
            failed[label] = "OutOfResources: out of resource: shared memory"
            continue
        ms = min(config_ms(b, w) for b, w in zip(blocks, warps, strict=True))
        times[label] = {"median_ms": ms, "rounds_ms": [ms, ms * 1.001, ms * 0.999]}
    times["eager"] = {"median_ms": 14.6, "rounds_ms": [14.6, 14.61, 14.59]}
    times["torch.compile"] = {"median_ms": 7.3, "rounds_ms": [7.3, 7.31, 7.29]}
    variants = space.variants()
    best = min((n for n in variants if n in times), key=lambda n: times[n]["median_ms"])
    return {
        "problem": "l1_norm",
        "stage": "tiling",
        "device": "synthetic",
        "launched": {KERNEL: 1},
        "space_size": len(variants),
        "best": best,
        "times": times,
        "failed": failed,
    }


@pytest.fixture(params=[*RECORDED, "synthetic"])
def sweep(request) -> dict:
    if request.param == "synthetic":
        return synthetic_tiling_sweep()
    return json.loads((SWEEPS / f"{request.param}.json").read_text())


def _best_ms(sweep: dict) -> float:
    """The exhaustive best: the sweep's best variant, or the start where none beats it."""
    return min(sweep["times"][sweep["best"]]["median_ms"], sweep["times"]["start"]["median_ms"])


@pytest.fixture
def replay_tiling(tmp_path, sweep):
    spec = load_problem(f"kernels/{sweep['problem']}")
    start = spec.kernel_path.read_text()
    (kernel,) = sweep["launched"]
    labels = {source: label for label, source in _tiling_space(sweep["problem"], kernel).variants().items()}
    labels[start] = "start"
    calls: list[str] = []

    def fake_evaluate(problem, source, device, **kw):
        label = labels.get(source)
        assert label is not None, "the search proposed a source outside the tiling space"
        calls.append(label)
        if label in sweep.get("failed", {}):
            return EvalResult(status=Status.COMPILE_ERROR, reason=sweep["failed"][label])
        assert label in sweep["times"], f"the sweep has no time for {label!r}: record it again"
        t = sweep["times"]
        return EvalResult(
            status=Status.ACCEPTED,
            kernels_launched={kernel: 1},
            timings=Timings(
                candidate=TimingStats(times_ms=t[label]["rounds_ms"]),
                eager=TimingStats(times_ms=t["eager"]["rounds_ms"]),
                compiled=TimingStats(times_ms=t["torch.compile"]["rounds_ms"]),
                roofline_ms=t["start"]["median_ms"] / 2,
            ),
        )

    def run(strategy: str, metrics: dict):
        calls.clear()
        stage = load_stage("tiling")
        store = Store.open_dir(tmp_path)
        settings = fake_settings(stage, tmp_path, fake_evaluate, FakeProfiler({kernel: [metrics]}))
        run_id = store.start_run(sweep["problem"], "cuda", "H200", "search", None, {})
        out = loop.run_stage(spec, start, SearchProposer(stage, strategy), store, run_id, settings, Quiet())
        return out, list(calls)

    return run


PROFILES = {
    "memory-bound": {
        DRAM: 75.27
    },  # l1_norm's start in the memory set on the H200: larger blocks, fewer warps
    "spilling": {DRAM: 75.27, SPILLING: 12.0},  # smaller blocks, more warps first
    "under-filled": {DRAM: 40.0},  # more programs first where the block sets the grid (fused_elementwise)
}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_coordinate_tiling_search_finds_the_sweeps_best_with_far_fewer_evaluations(
    replay_tiling, sweep, profile
):
    out, calls = replay_tiling("coordinate", PROFILES[profile])
    assert out.best.median_ms <= _best_ms(sweep) * (1 + MIN_GAIN)
    assert len(calls) - 1 <= sweep["space_size"] // 3  # l1_norm on the H200: 3 or 4 tries of 12
    assert ": BLOCK_" in calls[1]  # the BLOCK size first
    if sweep["problem"] == "l1_norm":  # a variant clearly faster than the start: taken
        assert out.best.median_ms < sweep["times"]["start"]["median_ms"] * 0.95  # H200: 7.225 -> 6.758 ms


def test_exhaustive_tiling_search_tries_the_whole_space(replay_tiling, sweep):
    """One step with every variant; the loop keeps the first that beats the start, then only what beats
    that by min_gain: the best is within min_gain of the sweep's (l1_norm on the H200: 0.7% off)."""
    out, calls = replay_tiling("exhaustive", PROFILES["memory-bound"])
    assert len(calls) - 1 == sweep["space_size"]
    assert out.best.median_ms <= _best_ms(sweep) * (1 + MIN_GAIN)
