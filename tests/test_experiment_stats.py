"""Known-truth tests of the experiment statistics (agent/experiment/stats.py, significance.py): pure, seeded,
fast.

Reference p-values were computed with scipy 1.17 (scipy.stats.wilcoxon / permutation_test), which the
project does not depend on.
"""

import math

import numpy as np
import pytest

from agent.experiment.significance import (
    bootstrap_ci,
    holm,
    min_problems,
    power_analysis,
    rankdata,
    sign_flip_test,
    wilcoxon_signed_rank,
)
from agent.experiment.stats import METRICS, compare, compare_many

SPEEDUP, CORRECT, TOKENS = METRICS["speedup"], METRICS["correct"], METRICS["tokens"]
DARWIN = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]  # scipy's wilcoxon example


def synthetic(rng, problems=10, samples=3, ratio=1.0, noise=0.1, spread=0.5):
    """Per-problem speedups for A and B: a problem-level difficulty shared by both arms, per-sample noise,
    and B = A * ratio by construction."""
    a, b = {}, {}
    for i in range(problems):
        base = math.exp(rng.normal(0, spread))
        a[f"p{i}"] = list(base * np.exp(rng.normal(0, noise, samples)))
        b[f"p{i}"] = list(base * ratio * np.exp(rng.normal(0, noise, samples)))
    return a, b


@pytest.mark.parametrize(
    ("d", "w_plus", "p"),
    [
        (DARWIN, 96.0, 0.041259765625),
        ([1, 2, 3, 4, 5], 15.0, 0.0625),
        ([1, 2, 3, 4, 5, 6], 21.0, 0.03125),
        ([-1, 2, -3, 4, 5, 6, 7, 8], 32.0, 0.0546875),
        ([1, 1, 2, 2, -3, 4, 4, -5], 23.0, 0.5546875),  # tied |d|
        ([0.5, -0.5, 1.5, 2, 2, 2, -1, 3, 0, 4], 40.5, 0.03125),  # ties and a zero (dropped)
    ],
)
def test_wilcoxon_exact_matches_known_values(d, w_plus, p):
    r = wilcoxon_signed_rank(d)
    assert r.statistic == w_plus
    assert r.p == pytest.approx(p, abs=1e-12)
    assert "exact" in r.method


def test_wilcoxon_normal_approximation_matches_scipy():
    d = np.round(np.random.default_rng(1).normal(0.2, 1, 40), 1)  # with ties
    r = wilcoxon_signed_rank(d)
    assert "normal approximation" in r.method
    assert r.p == pytest.approx(0.08679081343638019, rel=1e-9)


def test_sign_flip_exact_and_monte_carlo():
    assert sign_flip_test(DARWIN).p == pytest.approx(0.05267333984375)
    assert sign_flip_test([1, 2, 3, 4, 5]).p == pytest.approx(0.0625)
    assert sign_flip_test([0, 0, 0]).p == 1.0
    d = np.random.default_rng(3).normal(0.5, 1, 30)
    mc = sign_flip_test(d, np.random.default_rng(0), resamples=20_000)
    assert "random" in mc.method and 0 < mc.p < 0.05


def test_small_pieces():
    assert list(rankdata(np.array([3.0, 1.0, 3.0, 2.0]))) == [3.5, 1.0, 3.5, 2.0]
    assert min_problems(0.05) == 6 and min_problems(0.01) == 8
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    lo, hi = bootstrap_ci([1.0, 1.0, 1.0], np.random.default_rng(0), 100)
    assert lo == hi == 1.0


def test_b_better_by_construction_is_detected():
    a, b = synthetic(np.random.default_rng(7), problems=10, ratio=1.2)
    c = compare(a, b, SPEEDUP)
    assert c.p < 0.05 and c.wilcoxon.p < 0.05
    assert c.ci_low > 1.0 and c.ci_low < 1.2 < c.ci_high
    assert c.estimate == pytest.approx(1.2, rel=0.08)
    assert c.winner == "B" and c.wins == 10
    assert c.verdict.startswith("B beats A on speedup: ratio 1.")
    assert "(B/A), 95% CI 1." in c.verdict and "p=0.002" in c.verdict  # exact: 2 / 2^10


def test_a_better_is_reported_the_other_way_round():
    a, b = synthetic(np.random.default_rng(8), problems=8, ratio=1 / 1.3)
    c = compare(a, b, SPEEDUP)
    assert c.winner == "A" and c.losses == 8
    assert c.verdict.startswith("A beats B on speedup: ratio 1.")  # oriented winner/loser: above 1


def test_lower_is_better_metrics():
    a, b = synthetic(np.random.default_rng(9), problems=8, ratio=0.7)  # B spends 30% fewer tokens
    c = compare(a, b, TOKENS)
    assert c.winner == "B" and c.wins == 8 and "(B/A)" in c.verdict and "ratio 0.7" in c.verdict


def test_rates_compare_by_difference():
    a = {f"p{i}": [1.0, 1.0] for i in range(7)}
    b = {f"p{i}": [0.0, 0.5] for i in range(7)}
    c = compare(a, b, CORRECT)
    assert c.estimate == pytest.approx(-0.75)
    assert c.winner == "A" and c.p == pytest.approx(2 / 2**7)
    assert c.verdict.startswith(
        "A beats B on correctness rate: difference +0.75 (A−B), 95% CI +0.75 to +0.75"
    )


def test_identical_arms_false_positive_rate():
    """Two arms with the same distribution: p < 0.05 in about 5% of 200 repetitions, and the verdict of the
    others says there is no detectable difference."""
    rng = np.random.default_rng(2024)
    hits_perm = hits_wilcoxon = 0
    reps = 200
    for i in range(reps):
        a, b = synthetic(rng, problems=12, ratio=1.0, noise=0.15)
        c = compare(a, b, SPEEDUP, resamples=500, seed=i)
        hits_perm += c.p < 0.05
        hits_wilcoxon += c.wilcoxon.p < 0.05
        if c.p >= 0.05:
            assert c.verdict.startswith("no detectable difference at this sample size")
            assert c.winner is None
    rate = hits_perm / reps
    print(f"false-positive rate: permutation {rate:.3f}, Wilcoxon {hits_wilcoxon / reps:.3f}")
    assert rate <= 0.08 and hits_wilcoxon / reps <= 0.08
    assert rate >= 0.01  # the test is not degenerate (it can reject at all)


def test_bootstrap_ci_coverage():
    """The 95% percentile bootstrap interval over problems covers the true ratio in roughly 95% of
    repetitions (a little less at small n: percentile intervals are narrow there)."""
    rng = np.random.default_rng(11)
    true = 1.1
    covered = 0
    reps = 200
    for i in range(reps):
        a, b = synthetic(rng, problems=20, samples=2, ratio=true, noise=0.2)
        c = compare(a, b, SPEEDUP, resamples=1000, seed=i)
        covered += c.ci_low <= true <= c.ci_high
    assert 0.86 <= covered / reps <= 0.99


def test_power_note_and_small_samples():
    n_needed, detectable = power_analysis([0.1, 0.2, 0.0, 0.15, 0.05])
    assert n_needed is not None and n_needed >= 6 and detectable > 0
    c = compare({"x": [1.0], "y": [1.0]}, {"x": [2.0], "y": [2.0]}, SPEEDUP)
    assert not c.significant and c.p == 0.5
    assert "no paired test can reach p<0.05" in c.power_note
    c = compare({"x": [1.0]}, {"y": [1.0]}, SPEEDUP)
    assert c.missing == ["x", "y"] and "nothing to compare" in c.verdict


def test_more_arms_are_holm_adjusted():
    rng = np.random.default_rng(5)
    a, b = synthetic(rng, problems=8, ratio=1.25)
    _, c2 = synthetic(rng, problems=8, ratio=1.0)
    out = compare_many({"A": a, "B": b, "C": c2}, ["A", "B", "C"], SPEEDUP)
    assert [c.arm_b for c in out] == ["B", "C"]
    assert all(c.p_adjusted is not None and c.p_adjusted >= c.p for c in out)
    assert out[0].winner == "B" and "Holm-adjusted" in out[0].verdict
