"""Statistics of a prompt experiment: arm B against arm A, paired by problem (docs/experiments.md).

Pure functions over numbers (numpy only, seeded). Several samples of one problem are not independent (they
share the kernel, its starting point and its difficulty), so the unit of analysis is the problem: samples
are first aggregated within each problem, then each problem gives one paired effect, and every resampling
or permutation works on problems, never on samples.

- ratio metrics (speedup, tokens): geometric mean over samples; effect = log(B / A); estimate = the
  geometric-mean ratio B/A = exp(mean effect).
- rate metrics (correctness, compile, constraint-violation rates): mean over samples; effect = B - A;
  estimate = the mean difference.

The tests, the confidence interval, the power analysis, Holm's adjustment: agent/experiment/significance.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from agent.experiment.significance import (
    TestResult,
    bootstrap_ci,
    holm,
    min_problems,
    nonzero,
    power_analysis,
    sign_flip_test,
    wilcoxon_signed_rank,
)


class MetricDef(BaseModel):
    """How a metric is compared: as a ratio of geometric means or as a difference of rates."""

    name: str
    label: str
    kind: Literal["ratio", "rate"]
    higher_is_better: bool = True
    unit_note: str = ""


METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef(name="speedup", label="speedup", kind="ratio", unit_note="best kernel vs the start"),
        MetricDef(name="correct", label="correctness rate", kind="rate", unit_note="accepted / candidates"),
        MetricDef(name="compile", label="compile rate", kind="rate", unit_note="compiled / candidates"),
        MetricDef(
            name="constraint",
            label="constraint-violation rate",
            kind="rate",
            higher_is_better=False,
            unit_note="broke a stage rule / candidates",
        ),
        MetricDef(name="tokens", label="tokens", kind="ratio", higher_is_better=False, unit_note="per run"),
    )
}


class Comparison(BaseModel):
    """Arm B against arm A on one metric, paired by problem."""

    metric: MetricDef
    arm_a: str
    arm_b: str
    problems: list[str] = Field(description="The paired problems (a value in both arms).")
    missing: list[str] = Field(default_factory=list, description="Problems without a value in one arm.")
    a: list[float] = Field(default_factory=list, description="Per-problem aggregate of arm A.")
    b: list[float] = Field(default_factory=list, description="Per-problem aggregate of arm B.")
    effects: list[float] = Field(default_factory=list, description="log(B/A) (ratio) or B - A (rate).")
    samples_a: list[int] = Field(default_factory=list, description="Samples with a value, per problem.")
    samples_b: list[int] = Field(default_factory=list)
    wins: int = 0  # problems where B is better beyond the tie band
    ties: int = 0
    losses: int = 0
    tie_band: float
    estimate: float | None = Field(None, description="Geometric-mean ratio B/A, or mean difference B - A.")
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float = 0.95
    resamples: int = 0
    permutation: TestResult | None = None
    wilcoxon: TestResult | None = None
    alpha: float = 0.05
    family: int = Field(
        1, description="Comparisons the p-value is adjusted over (Holm): power uses alpha/family."
    )
    p: float | None = Field(None, description="The primary p-value (the permutation test's).")
    p_adjusted: float | None = Field(None, description="Holm-adjusted over the arms compared with A.")
    significant: bool = False
    winner: str | None = None
    verdict: str = ""
    power_note: str = ""
    n_needed: int | None = Field(None, description="Problems for 80% power at the observed effect.")
    detectable: float | None = Field(None, description="Effect detectable with 80% power at this n.")

    @property
    def n(self) -> int:
        return len(self.problems)


# --- small pieces -----------------------------------------------------------------------------------
def geomean(values: Sequence[float]) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x) and x > 0]
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else None


def aggregate(values: Sequence[float | None], kind: str) -> float | None:
    """One problem's value from its samples: geometric mean (ratio) or mean (rate); None without any."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    if kind == "ratio":
        return geomean(v)
    return sum(v) / len(v) if v else None


# --- the comparison -----------------------------------------------------------------------------------
def fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def signed(v: float) -> str:
    """+0.25, -0.50; never '-0.00'."""
    return f"{0.0 if abs(v) < 0.005 else v:+.2f}"


def _effect_text(metric: MetricDef, value: float, first: str, second: str) -> str:
    """'ratio 1.12 (B/A)' or 'difference +0.25 (B-A)' for an estimate on the B-vs-A scale, oriented
    first-vs-second."""
    if metric.kind == "ratio":
        return f"ratio {value:.2f} ({first}/{second})"
    return f"difference {signed(value)} ({first}−{second})"


def _orient(metric: MetricDef, est: float, lo: float, hi: float, b_first: bool) -> tuple[float, float, float]:
    if b_first:
        return est, lo, hi
    if metric.kind == "ratio":
        return 1 / est, 1 / hi, 1 / lo
    return -est, -hi, -lo


def _range(metric: MetricDef, lo: float, hi: float) -> str:
    return f"{lo:.2f}-{hi:.2f}" if metric.kind == "ratio" else f"{signed(lo)} to {signed(hi)}"


def _scale(metric: MetricDef, effect: float | None) -> float | None:
    """An effect on the log scale (ratios) back to a ratio; a difference as it is."""
    if effect is None:
        return None
    return math.exp(effect) if metric.kind == "ratio" else effect


def compare(
    values_a: Mapping[str, Sequence[float | None]],
    values_b: Mapping[str, Sequence[float | None]],
    metric: MetricDef,
    arm_a: str = "A",
    arm_b: str = "B",
    alpha: float = 0.05,
    tie: float | None = None,
    resamples: int = 10_000,
    seed: int = 0,
    ci_level: float = 0.95,
    power: float = 0.8,
) -> Comparison:
    """B against A. `values_*`: problem -> the metric of each sample (None: not measured).

    `tie`: the band within which a problem counts as a tie: relative for ratios (0.01: within 1%),
    absolute for rates (0.01: one percentage point); default 0.01.
    """
    tie = 0.01 if tie is None else tie
    band = math.log1p(tie) if metric.kind == "ratio" else tie
    rng = np.random.default_rng(seed)
    c = Comparison(
        metric=metric, arm_a=arm_a, arm_b=arm_b, problems=[], tie_band=tie, alpha=alpha, ci_level=ci_level
    )
    for name in sorted(set(values_a) | set(values_b)):
        a = aggregate(values_a.get(name, []), metric.kind)
        b = aggregate(values_b.get(name, []), metric.kind)
        if a is None or b is None:
            c.missing.append(name)
            continue
        c.problems.append(name)
        c.a.append(a)
        c.b.append(b)
        c.samples_a.append(sum(1 for v in values_a[name] if v is not None))
        c.samples_b.append(sum(1 for v in values_b[name] if v is not None))
        c.effects.append(math.log(b / a) if metric.kind == "ratio" else b - a)
    sign = 1 if metric.higher_is_better else -1
    for e in c.effects:
        if abs(e) < band:
            c.ties += 1
        elif sign * e > 0:
            c.wins += 1
        else:
            c.losses += 1
    if not c.effects:
        c.verdict = f"no problem has a {metric.label} in both arms: nothing to compare"
        return c
    to_scale = math.exp if metric.kind == "ratio" else float
    mean = float(np.mean(c.effects))
    lo, hi = bootstrap_ci(c.effects, rng, resamples, ci_level)
    c.estimate, c.ci_low, c.ci_high, c.resamples = to_scale(mean), to_scale(lo), to_scale(hi), resamples
    c.permutation = sign_flip_test(c.effects, rng, resamples)
    c.wilcoxon = wilcoxon_signed_rank(c.effects)
    c.p = c.permutation.p
    c.n_needed, detectable = power_analysis(c.effects, alpha, power)
    c.detectable = _scale(metric, detectable)
    describe(c)
    return c


def describe(c: Comparison, p: float | None = None) -> None:
    """Set the verdict and the power note from the numbers (again after a Holm adjustment: `p`)."""
    m = c.metric
    if c.estimate is None or c.p is None or c.ci_low is None or c.ci_high is None:
        return
    p = c.p if p is None else p
    null = 1.0 if m.kind == "ratio" else 0.0
    b_better = c.estimate == null or (c.estimate > null) == m.higher_is_better
    c.significant = p < c.alpha and c.estimate != null
    level = f"{round(c.ci_level * 100)}% CI"
    first, second = (c.arm_b, c.arm_a) if b_better else (c.arm_a, c.arm_b)
    est, lo, hi = _orient(m, c.estimate, c.ci_low, c.ci_high, b_first=b_better)
    numbers = f"{_effect_text(m, est, first, second)}, {level} {_range(m, lo, hi)}, {fmt_p(p)}"
    if c.family > 1:
        numbers += f" (Holm-adjusted over {c.family} comparisons with {c.arm_a})"
    if c.significant:
        c.winner = first
        c.verdict = f"{first} beats {second} on {m.label}: {numbers}"
        if lo <= null <= hi:
            c.verdict += " (the bootstrap interval still includes no difference: a weak result)"
    else:
        c.winner = None
        c.verdict = f"no detectable difference at this sample size ({numbers}; n={c.n} problems)"
        if not lo <= null <= hi:
            c.verdict += "; the bootstrap interval excludes no difference but runs narrow with few problems"
    c.power_note = _power_note(c)


def _power_note(c: Comparison) -> str:
    m, n = c.metric, c.n
    alpha = c.alpha / c.family
    floor = min_problems(alpha)
    ratio = m.kind == "ratio"
    effects = np.asarray(c.effects, dtype=float)
    spread = float(np.std(effects, ddof=1)) if n >= 2 else None
    parts = []
    differing = len(nonzero(effects))
    if n < floor:
        parts.append(
            f"with {n} problem{'s' if n != 1 else ''} no paired test can reach p<{alpha:g} "
            f"(the exact tests need at least {floor})"
        )
    elif differing < floor:
        parts.append(
            f"only {differing} of the {n} problems differ at all (an exact zero carries no sign), and the "
            f"exact tests need {floor} to reach p<{alpha:g}"
        )
    if spread is None:
        parts.append("the spread cannot be estimated from fewer than 2 problems")
    elif spread == 0 and np.all(effects == 0):
        parts.append("the arms gave the same value on every problem")
    elif spread == 0:
        parts.append(
            "every problem gave the same effect, so there is no spread to size a study from: an effect "
            f"this consistent is significant with {floor} or more problems"
        )
    elif c.detectable is not None:
        if not ratio and c.detectable >= 1:
            parts.append(f"at n={n} not even the largest difference of a rate (1.00) is reliably detectable")
        else:
            shown = f"ratio {c.detectable:.2f}" if ratio else f"difference of {c.detectable:.2f}"
            parts.append(f"at n={n} a {shown} is detectable with 80% power")
        if not c.significant and c.n_needed is not None and c.estimate is not None:
            effect = (
                f"ratio {c.estimate:.2f} ({c.arm_b}/{c.arm_a})"
                if ratio
                else f"difference {signed(c.estimate)} ({c.arm_b}−{c.arm_a})"
            )
            parts.append(f"the observed {effect} would need about {c.n_needed} problems for 80% power")
        elif not c.significant and c.n_needed is None:
            parts.append("the observed mean effect is zero: no sample size would make it significant")
    if c.family > 1:
        parts.append(f"sized at alpha/{c.family} = {alpha:.3g} for the Holm adjustment")
    parts.append("power comes from problems, not samples: samples only sharpen each problem's value")
    return "; ".join(parts)


def compare_many(
    values: Mapping[str, Mapping[str, Sequence[float | None]]],
    arms: Sequence[str],
    metric: MetricDef,
    **kwargs: object,
) -> list[Comparison]:
    """Each arm after the first against the first; with more than two arms, p-values are Holm-adjusted."""
    base = arms[0]
    out = [
        compare(values.get(base, {}), values.get(arm, {}), metric, base, arm, **kwargs)  # type: ignore[arg-type]
        for arm in arms[1:]
    ]
    tested = [c for c in out if c.p is not None]
    if len(tested) > 1:
        for c, adj in zip(tested, holm([c.p for c in tested]), strict=True):  # type: ignore[misc]
            c.p_adjusted, c.family = adj, len(tested)
            c.n_needed, detectable = power_analysis(c.effects, c.alpha / c.family)
            c.detectable = _scale(c.metric, detectable)
            describe(c, adj)
    return out
