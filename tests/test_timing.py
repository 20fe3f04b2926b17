"""Timing: the arithmetic on the CPU, the measurements on a GPU (marked `gpu`)."""

from __future__ import annotations

import pytest
import torch

from agent import timing
from agent.models import Timings, TimingStats


def test_roofline_is_the_larger_of_bytes_and_flops():
    # 8 GB at 4000 GB/s is 2 ms; 1 TFLOP at 500 TFLOP/s is 2 ms; 4 TFLOP at 500 TFLOP/s is 8 ms
    assert timing.roofline_ms(8e9, 4000) == pytest.approx(2.0)
    assert timing.roofline_ms(8e9, 4000, flops=1e12, tflops=500) == pytest.approx(2.0)
    assert timing.roofline_ms(8e9, 4000, flops=4e12, tflops=500) == pytest.approx(8.0)
    assert timing.roofline_ms(8e9, 4000, flops=4e12, tflops=None) == pytest.approx(2.0)


def test_seed_problem_floor_matches_facts():
    # FACTS.md: one read plus one write of a 32768 x 65535 fp32 tensor at 4269 GB/s is 4.02 ms
    nbytes = 2 * 32768 * 65535 * 4
    assert timing.roofline_ms(nbytes, 4269) == pytest.approx(4.02, abs=0.01)


def test_timing_stats_median_and_derived_ratios():
    stats = TimingStats(times_ms=[5.0, 1.0, 3.0, 100.0, 2.0])
    assert stats.median_ms == 3.0
    assert stats.n == 5
    t = Timings(
        candidate=TimingStats(times_ms=[2.0, 2.0, 2.0]),
        eager=TimingStats(times_ms=[4.0, 6.0, 5.0]),
        roofline_ms=1.0,
    )
    assert t.speedup_eager == pytest.approx(2.5)
    assert t.pct_roofline == pytest.approx(50.0)
    assert t.speedup_compiled is None


def test_plausibility_warns_but_never_fails():
    fast = Timings(candidate=TimingStats(times_ms=[1.0]), eager=TimingStats(times_ms=[20.0]), roofline_ms=2.0)
    check = timing.plausibility(fast)
    assert check.passed and check.detail.startswith("warning: ")
    assert "200% of roofline" in check.detail and "20.0x faster than eager" in check.detail
    normal = Timings(
        candidate=TimingStats(times_ms=[4.0]), eager=TimingStats(times_ms=[8.0]), roofline_ms=2.0
    )
    assert timing.plausibility(normal).detail == "within the measured floor"


@pytest.mark.gpu
def test_time_interleaved_orders_known_work():
    small = torch.randn(1 << 20, device="cuda")
    large = torch.randn(1 << 28, device="cuda")
    stats = timing.time_interleaved(
        {"small": lambda: small * 2, "large": lambda: large * 2}, reps=20, warmup=2
    )
    assert set(stats) == {"small", "large"}
    assert stats["small"].n == 20 and stats["large"].n == 20
    assert 0 < stats["small"].median_ms < stats["large"].median_ms
    # 2 GiB moved (1 GiB read + 1 GiB written); no GPU we target does that in under 0.1 ms
    assert stats["large"].median_ms > 0.1


@pytest.mark.gpu
def test_copy_bandwidth_is_plausible():
    bw = timing.measure_copy_bandwidth()
    assert 100 < bw < 10_000  # GB/s; the H200 measured ~4270


@pytest.mark.gpu
def test_matmul_tflops_is_plausible():
    tflops = timing.measure_matmul_tflops(4096, reps=5)
    assert 1 < tflops < 2_000


def test_drift_flags_a_measurement_whose_halves_disagree():
    from agent.timing import drift, noisy

    steady = TimingStats(times_ms=[1.0, 1.01, 0.99, 1.0, 1.0, 1.01, 0.99, 1.0])
    jump = TimingStats(times_ms=[1.0, 1.0, 1.0, 1.0, 1.1, 1.1, 1.1, 1.1])
    assert drift(steady) < 0.01 and drift(jump) == pytest.approx(0.1)
    assert noisy({"a": steady, "b": jump}) == ["b 10.0%"]


@pytest.mark.gpu
def test_cuda_graph_mode_times_replays():
    import torch

    from agent import timing

    x = torch.randn(1 << 24, device="cuda")
    y = torch.empty_like(x)
    stats = timing.time_interleaved({"copy": lambda: y.copy_(x)}, reps=10, warmup=2, graphs=True)
    assert stats["copy"].n == 10 and stats["copy"].method == timing.GRAPH_METHOD
    assert 0 < stats["copy"].median_ms < 5


@pytest.mark.gpu
def test_a_time_budget_gives_short_kernels_more_rounds_and_long_ones_the_minimum():
    import torch

    small = torch.ones(1024, device="cuda")
    big = torch.ones(256 * 1024**2, device="cuda")  # 1 GiB: about 0.5 ms per add on an H100/H200
    short = timing.time_interleaved({"s": lambda: small.add(1)}, reps=30, max_s=0.2, max_reps=400)
    assert len(short["s"].times_ms) == 400  # many fit: capped
    long = timing.time_interleaved({"b": lambda: big.add(1)}, reps=30, max_s=0.002, max_reps=400)
    assert len(long["b"].times_ms) == 30  # none fit: the minimum
