"""Timing: the arithmetic on the CPU, the measurements on a GPU (marked `gpu`)."""

from __future__ import annotations

import pytest
import torch

from agent.evaluation import timing
from agent.records import Timings, TimingStats


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
    from agent.evaluation.timing import drift, noisy

    steady = TimingStats(times_ms=[1.0, 1.01, 0.99, 1.0, 1.0, 1.01, 0.99, 1.0])
    jump = TimingStats(times_ms=[1.0, 1.0, 1.0, 1.0, 1.1, 1.1, 1.1, 1.1])
    assert drift(steady) < 0.01 and drift(jump) == pytest.approx(0.1)
    assert noisy({"a": steady, "b": jump}) == ["b 10.0%"]


@pytest.mark.gpu
def test_cuda_graph_mode_times_replays():
    import torch

    from agent.evaluation import timing

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


def test_median_interval_narrows_with_samples_and_needs_six():
    from agent.evaluation.timing import median_halfwidth

    assert median_halfwidth([1.0] * 5) == float("inf")
    assert median_halfwidth([1.0] * 6) == 0.0
    noisy_few = [1.0, 1.04, 0.96, 1.02, 0.98, 1.0, 1.01, 0.99, 1.03, 0.97]
    assert median_halfwidth(noisy_few) == pytest.approx(0.03)  # ranks 2 and 9 of 10: 0.97 .. 1.03
    assert median_halfwidth(noisy_few * 10) < median_halfwidth(noisy_few)


def _scripted(draws: dict[str, list[float]]):
    """A `timed` for Rounds.run that hands out the scripted times, and logs each chunk asked for."""
    asked: list[tuple[list[str], int]] = []
    cursor = dict.fromkeys(draws, 0)

    def timed(names, rounds):
        asked.append((list(names), rounds))
        out = {}
        for n in names:
            out[n] = [draws[n][(cursor[n] + i) % len(draws[n])] for i in range(rounds)]
            cursor[n] += rounds
        return out

    return timed, asked


def test_rounds_stop_once_every_median_is_precise():
    from agent.evaluation.timing import Rounds, until_precise

    steady = [7.20, 7.21, 7.19, 7.20]
    timed, asked = _scripted({"candidate": steady, "eager": [12.4, 12.41, 12.39]})
    plan = Rounds.planned(reps=10, round_s=0.029, max_s=1.0, max_reps=500, min_s=0.25)
    assert (plan.first, plan.limit) == (10, 34)  # 0.25 s of 29 ms rounds: 8, so the 10 asked for
    times = plan.run(["candidate", "eager"], timed, until_precise(0.005))
    assert asked == [(["candidate", "eager"], 10)]  # precise after the first chunk
    assert len(times["candidate"]) == len(times["eager"]) == 10


def test_rounds_go_on_while_noisy_and_stop_at_the_budget():
    from agent.evaluation.timing import Rounds, until_precise

    jumpy = [1.0, 1.3, 0.8, 1.1, 0.9, 1.25, 0.85]  # never within +-0.5%
    timed, asked = _scripted({"a": jumpy, "b": [2.0]})
    plan = Rounds.planned(reps=10, round_s=0.004, max_s=0.1, max_reps=500, min_s=0.0)
    times = plan.run(["a", "b"], timed, until_precise(0.005))
    assert plan.limit == 25 and len(times["a"]) == len(times["b"]) == 25
    assert [r for _, r in asked] == [10, 5, 5, 5]  # interleaved to the end: both fns in every chunk
    assert all(names == ["a", "b"] for names, _ in asked)


def test_without_a_rule_every_round_runs_at_once():
    from agent.evaluation.timing import Rounds

    timed, asked = _scripted({"a": [1.0]})
    times = Rounds.planned(reps=30, round_s=0.001, max_s=0.2, max_reps=400, min_s=0.0).run(["a"], timed, None)
    assert asked == [(["a"], 200)] and len(times["a"]) == 200


def test_min_window_sets_the_first_chunk_for_short_rounds():
    from agent.evaluation.timing import Rounds

    plan = Rounds.planned(reps=10, round_s=0.0055, max_s=1.0, max_reps=500, min_s=0.25)
    assert plan.first == 45 and plan.limit == 181


def test_retune_rule_drops_clearly_slower_configs_and_ends_with_one():
    from agent.evaluation.timing import Rounds, until_fastest_known

    fast = [1.60, 1.62, 1.58, 1.61, 1.59]
    close = [1.61, 1.63, 1.57, 1.60, 1.64]  # overlaps the fastest: stays
    slow = [1.90, 1.91, 1.89]  # far above: drops after the first chunk
    timed, asked = _scripted({"0": fast, "1": close, "2": slow})
    plan = Rounds.planned(reps=8, round_s=0.005, max_s=0.6, max_reps=30, min_s=0.0)
    times = plan.run(["0", "1", "2"], timed, until_fastest_known(0.001))
    assert asked[0] == (["0", "1", "2"], 8)
    assert all("2" not in names for names, _ in asked[1:]) and len(times["2"]) == 8
    assert len(times["0"]) == len(times["1"]) == 30  # never separated, never within 0.1%: the cap


def test_retune_rule_stops_when_the_rest_are_precise():
    from agent.evaluation.timing import until_fastest_known
    from agent.records import TimingStats

    rule = until_fastest_known(0.005)
    a = TimingStats(times_ms=[1.600, 1.601, 1.599] * 3)
    b = TimingStats(times_ms=[1.602, 1.603, 1.601] * 3)
    c = TimingStats(times_ms=[1.0, 3.0] * 2)  # 4 samples: unknown, so it stays
    assert rule({"a": a, "b": b}) == []  # both known to +-0.5%: equal within precision, done
    assert set(rule({"a": a, "c": c})) == {"a", "c"}
