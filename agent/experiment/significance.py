"""The paired tests of a prompt experiment's effects, one effect per problem (agent/experiment/stats.py makes
them): pure functions over numbers (numpy only, seeded).

A sign-flip permutation test of the mean effect (exact for n <= 16 problems, else Monte Carlo) is the
primary one; the Wilcoxon signed-rank test (exact for n <= 30, tie-aware; normal approximation with tie and
continuity corrections above) is reported beside it. The confidence interval is a percentile bootstrap over
problems; the power analysis is a normal approximation; several arms against one baseline are adjusted
with Holm's method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from pydantic import BaseModel

EXACT_PERMUTATION_MAX_N = 16
EXACT_WILCOXON_MAX_N = 30
_TOL = 1e-9  # relative: sums that equal the observed one up to rounding count as "as extreme"


class TestResult(BaseModel):
    """A two-sided p-value, the statistic, and how it was computed."""

    __test__ = False  # not a pytest class

    p: float
    statistic: float
    method: str


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def nonzero(d: np.ndarray) -> np.ndarray:
    """The differences that are not zero (up to rounding against the largest one)."""
    scale = float(np.max(np.abs(d))) if len(d) else 0.0
    return d[np.abs(d) > 1e-12 * max(scale, 1e-300)] if scale > 0 else d[:0]


def wilcoxon_signed_rank(d: Sequence[float], exact_max_n: int = EXACT_WILCOXON_MAX_N) -> TestResult:
    """Two-sided Wilcoxon signed-rank test of the paired differences `d` (zeros dropped, Wilcoxon's way).

    Statistic: W+, the sum of the ranks of the positive differences (tied |d| get average ranks). Exact for
    n <= exact_max_n: the distribution of W+ under random signs, by dynamic programming over doubled ranks
    (exact with ties too, conditional on them). Above: normal approximation with tie and continuity
    corrections.
    """
    x = nonzero(np.asarray(d, dtype=float))
    n = len(x)
    if n == 0:
        return TestResult(p=1.0, statistic=0.0, method="Wilcoxon signed-rank: every difference is zero")
    r = rankdata(np.abs(x))
    w_plus = float(r[x > 0].sum())
    if n <= exact_max_n:
        doubled = np.rint(2 * r).astype(np.int64)
        total = int(doubled.sum())
        counts = np.zeros(total + 1, dtype=np.float64)
        counts[0] = 1.0
        for v in doubled:
            counts[v:] = counts[v:] + counts[: total + 1 - v].copy()
        sums = np.arange(total + 1)
        centre = total / 2
        extreme = np.abs(sums - centre) >= abs(2 * w_plus - centre) - 1e-9
        p = float(counts[extreme].sum() / counts.sum())
        return TestResult(p=min(1.0, p), statistic=w_plus, method=f"Wilcoxon signed-rank, exact (n={n})")
    mean = n * (n + 1) / 4
    _, tie_counts = np.unique(np.abs(x), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - float(np.sum(tie_counts**3 - tie_counts)) / 48
    diff = w_plus - mean
    z = (abs(diff) - 0.5) / math.sqrt(var) if var > 0 else 0.0
    p = 2 * (1 - NormalDist().cdf(max(z, 0.0)))
    return TestResult(
        p=min(1.0, p), statistic=w_plus, method=f"Wilcoxon signed-rank, normal approximation (n={n})"
    )


def sign_flip_test(
    d: Sequence[float],
    rng: np.random.Generator | None = None,
    resamples: int = 10_000,
    exact_max_n: int = EXACT_PERMUTATION_MAX_N,
) -> TestResult:
    """Two-sided paired permutation test of mean(d) = 0: under the null each problem's effect is as likely
    to have the other sign (the arms' labels are exchangeable within a problem). Exact enumeration of the
    2^n sign vectors for n <= exact_max_n; otherwise `resamples` random ones, p = (hits + 1) / (R + 1)."""
    x = np.asarray(d, dtype=float)
    n = len(x)
    if n == 0:
        return TestResult(p=1.0, statistic=0.0, method="sign-flip permutation: no problems")
    observed = abs(float(x.sum()))
    tol = _TOL * max(float(np.abs(x).sum()), 1e-300)
    if n <= exact_max_n:
        bits = (np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n)) & 1
        sums = (1 - 2 * bits) @ x
        p = float(np.mean(np.abs(sums) >= observed - tol))
        method = f"sign-flip permutation, exact ({2**n} sign vectors)"
    else:
        rng = rng or np.random.default_rng(0)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(resamples, n))
        hits = int(np.sum(np.abs(signs @ x) >= observed - tol))
        p = (hits + 1) / (resamples + 1)
        method = f"sign-flip permutation, {resamples} random sign vectors"
    return TestResult(p=min(1.0, p), statistic=float(x.mean()), method=method)


def bootstrap_ci(
    effects: Sequence[float], rng: np.random.Generator, resamples: int = 10_000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean effect, resampling problems (the clusters) with replacement."""
    x = np.asarray(effects, dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan)
    idx = rng.integers(0, len(x), size=(resamples, len(x)))
    means = x[idx].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def min_problems(alpha: float) -> int:
    """The fewest problems with which the exact paired tests can reach p < alpha: 2 / 2^n < alpha."""
    return math.floor(1 - math.log2(alpha)) + 1


def power_analysis(
    effects: Sequence[float], alpha: float = 0.05, power: float = 0.8
) -> tuple[int | None, float | None]:
    """(problems needed for `power` at the observed mean effect, effect detectable at the current n).

    Normal approximation of a paired test: n = ((z_{1-alpha/2} + z_power) * sd / mean)^2, never below
    min_problems(alpha); the detectable effect at n is (z_{1-alpha/2} + z_power) * sd / sqrt(n). None where
    the spread cannot be estimated (n < 2) or the observed mean is zero.
    """
    x = np.asarray(effects, dtype=float)
    if len(x) < 2:
        return None, None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    sd = float(np.std(x, ddof=1))
    mean = float(np.mean(x))
    detectable = z * sd / math.sqrt(len(x))
    floor = min_problems(alpha)
    if mean == 0:
        return None, detectable
    if sd == 0:
        return floor, detectable
    return max(floor, math.ceil((z * sd / mean) ** 2)), detectable


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error) of several comparisons with the same baseline."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out
