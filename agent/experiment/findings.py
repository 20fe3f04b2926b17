"""What an experiment found: per-unit metrics read from each unit's records, per-arm summaries, the paired
statistics of agent/experiment/stats.py. Written as EXP_DIR/results.json; shown by agent/experiment/tables.py
(the terminal's tables) and agent/experiment/html.py (EXP_DIR/report.html).
"""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.batch.inputs import write_atomic
from agent.experiment.design import Arm, ExperimentConfig
from agent.experiment.stats import METRICS, Comparison, compare_many, geomean
from agent.experiment.units import Unit, read_unit, schedule, unit_dir
from agent.records import Status
from agent.store import Store

RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"
NOT_COMPILED = {Status.NO_CODE.value, Status.COMPILE_ERROR.value, Status.CONSTRAINT.value}
RATES = ("correct", "compile", "constraint")


class UnitMetrics(BaseModel):
    """One unit's numbers, from its records.sqlite."""

    arm: str
    problem: str
    sample: int
    seed: int | None = None
    status: str = "missing"  # done, budget, failed, error, or missing (not run yet)
    reason: str = ""
    candidates: int = 0  # proposed candidates (the starting kernel excluded), rejected ones included
    compiled: int = 0
    accepted: int = 0
    constraint: int = 0
    start_ms: float | None = None
    best_ms: float | None = None
    tokens: int = 0  # prompt + completion tokens, replies served from the cache at their original cost
    first_improvement: int | None = None  # candidates until the first accepted one beating the start
    wall_s: float = 0.0
    path: str = ""

    @property
    def finished(self) -> bool:
        return self.status in ("done", "budget")

    @property
    def speedup(self) -> float | None:
        if self.start_ms is None or self.best_ms is None or self.best_ms <= 0:
            return None
        return self.start_ms / self.best_ms

    def value(self, metric: str) -> float | None:
        if not self.finished:
            return None
        if metric == "speedup":
            return self.speedup
        if metric == "tokens":
            return float(self.tokens) if self.tokens > 0 else None
        if self.candidates == 0:
            return None
        return {"correct": self.accepted, "compile": self.compiled, "constraint": self.constraint}[
            metric
        ] / self.candidates


class ArmSummary(BaseModel):
    """An arm's numbers pooled over its units (descriptive; the statistics pair by problem)."""

    name: str
    spec: str
    units: int
    finished: int
    failed: int
    unfinished: int
    candidates: int
    rates: dict[str, float | None]
    speedups: list[float]
    speedup_geomean: float | None
    best_speedup: dict[str, float | None] = Field(description="Per problem: the best over its samples.")
    tokens_total: int
    tokens_per_unit: float | None
    first_improvement_median: float | None
    improved_fraction: float | None
    wall_s: float


class AnalysisOptions(BaseModel):
    """How results are analysed; may change from one invocation to the next (nothing is run again)."""

    metric: str = "auto"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    tie: float = Field(default=0.01, ge=0)
    resamples: int = Field(default=10_000, ge=100)


class ExperimentResults(BaseModel):
    """results.json."""

    experiment: str
    generated_at: str
    machine: str | None
    arms: list[Arm]
    problems: list[str]
    samples: int
    seed: int
    options: AnalysisOptions
    metric: str
    metric_note: str
    timed: bool
    units: list[UnitMetrics]
    summaries: list[ArmSummary]
    primary: list[Comparison]
    secondary: list[Comparison]
    notes: list[str] = Field(default_factory=list)


# --- reading the records --------------------------------------------------------------------------------
def _tokens(conn: Any, run_id: int) -> int:
    total = 0
    for (usage,) in conn.execute(
        "SELECT r.usage FROM replies r JOIN prompts p ON p.id = r.prompt_id WHERE p.run_id=?", (run_id,)
    ):
        u = json.loads(usage) if usage else {}
        total += sum(int(u.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "cached_tokens"))
    return total


def unit_metrics(exp_dir: Path, u: Unit, min_gain: float) -> UnitMetrics:
    udir = unit_dir(exp_dir, u)
    m = UnitMetrics(arm=u.arm, problem=u.problem, sample=u.sample, path=str(udir.relative_to(exp_dir)))
    outcome = read_unit(udir)
    if outcome is None or not (udir / Store.FILENAME).exists():
        return m
    m.seed, m.status, m.reason, m.wall_s = outcome.seed, outcome.status, outcome.reason, outcome.wall_s
    if outcome.run_id is None:
        return m
    store = Store.open_dir(udir)
    try:
        rows = [r for r in store.history(outcome.run_id) if r["status"] is not None]
        start = next((r for r in rows if r["proposer"] == "start"), None)
        cands = [r for r in rows if r["proposer"] != "start"]
        m.start_ms = start["median_ms"] if start is not None else None
        m.candidates = len(cands)
        m.compiled = sum(r["status"] not in NOT_COMPILED for r in cands)
        m.accepted = sum(r["status"] == Status.ACCEPTED.value for r in cands)
        m.constraint = sum(r["status"] == Status.CONSTRAINT.value for r in cands)
        for i, r in enumerate(cands, 1):
            beats = m.start_ms is None or (
                r["median_ms"] is not None and r["median_ms"] < m.start_ms * (1 - min_gain)
            )
            if r["status"] == Status.ACCEPTED.value and beats:
                m.first_improvement = i
                break
        best_path = udir / "best_kernel.py"
        m.best_ms = m.start_ms
        if best_path.exists():
            ids = {
                row[0]
                for row in store.conn.execute(
                    "SELECT id FROM candidates WHERE run_id=? AND source=?",
                    (outcome.run_id, best_path.read_text()),
                )
            }
            timed = [r["median_ms"] for r in rows if r["id"] in ids and r["median_ms"] is not None]
            if timed:
                m.best_ms = min(timed)
        m.tokens = _tokens(store.conn, outcome.run_id)
    finally:
        store.close()
    return m


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize_arm(arm: Arm, units: list[UnitMetrics]) -> ArmSummary:
    done = [u for u in units if u.finished]
    n = sum(u.candidates for u in done)
    pooled = {"correct": "accepted", "compile": "compiled", "constraint": "constraint"}
    speedups = [s for u in done if (s := u.speedup) is not None]
    best: dict[str, float | None] = dict.fromkeys(u.problem for u in units)
    for u in done:
        if (s := u.speedup) is not None:
            best[u.problem] = max(s, best[u.problem] or 0.0)
    firsts = [float(u.first_improvement) for u in done if u.first_improvement is not None]
    return ArmSummary(
        name=arm.name,
        spec=arm.spec,
        units=len(units),
        finished=len(done),
        failed=sum(u.status == "failed" for u in units),
        unfinished=sum(u.status in ("error", "missing") for u in units),
        candidates=n,
        rates={k: (sum(getattr(u, f) for u in done) / n if n else None) for k, f in pooled.items()},
        speedups=speedups,
        speedup_geomean=geomean(speedups),
        best_speedup=best,
        tokens_total=sum(u.tokens for u in done),
        tokens_per_unit=sum(u.tokens for u in done) / len(done) if done else None,
        first_improvement_median=_median(firsts),
        improved_fraction=len(firsts) / len(done) if done else None,
        wall_s=sum(u.wall_s for u in units),
    )


def analyze(
    exp_dir: Path, options: AnalysisOptions | None = None, notes: list[str] | None = None
) -> ExperimentResults:
    """Every unit's metrics, each arm's summary, and the paired comparisons with the first arm."""
    options = options or AnalysisOptions()
    cfg = ExperimentConfig.load(exp_dir)
    arms = [a.name for a in cfg.arms]
    problems = [p.name for p in cfg.problems]
    units = [unit_metrics(exp_dir, u, cfg.run.min_gain) for u in schedule(arms, problems, cfg.samples)]
    timed = any(u.speedup is not None for u in units)
    if options.metric == "auto":
        metric = "speedup" if timed else "correct"
        why = "auto: candidates were timed" if timed else "auto: nothing was timed (no GPU), so correctness"
    else:
        if options.metric not in METRICS:
            raise ValueError(f"--metric {options.metric!r}: choose auto or one of {', '.join(METRICS)}")
        metric, why = options.metric, "chosen"
    values: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    for name in METRICS:
        per_arm: dict[str, dict[str, list[float | None]]] = {a: {} for a in arms}
        for u in units:
            per_arm[u.arm].setdefault(u.problem, []).append(u.value(name))
        values[name] = per_arm
    kwargs = {"alpha": options.alpha, "tie": options.tie, "resamples": options.resamples, "seed": cfg.seed}
    primary = compare_many(values[metric], arms, METRICS[metric], **kwargs)
    secondary = []
    for name in METRICS:
        has_values = any(v is not None for a in arms for vs in values[name][a].values() for v in vs)
        if name != metric and has_values:
            secondary += compare_many(values[name], arms, METRICS[name], **kwargs)
    notes = list(notes or [])
    missing = [u for u in units if not u.finished and u.status != "failed"]
    if missing:
        notes.append(f"{len(missing)} of {len(units)} units have not finished: resume the experiment")
    if not timed:
        notes.append(
            "speedup: not measured (no GPU: candidates were checked in Triton's interpreter but not timed)"
        )
    return ExperimentResults(
        experiment=str(Path(exp_dir).resolve()),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=cfg.machine,
        arms=cfg.arms,
        problems=problems,
        samples=cfg.samples,
        seed=cfg.seed,
        options=options,
        metric=metric,
        metric_note=why,
        timed=timed,
        units=units,
        summaries=[summarize_arm(a, [u for u in units if u.arm == a.name]) for a in cfg.arms],
        primary=primary,
        secondary=secondary,
        notes=notes,
    )


def write_results(exp_dir: Path, results: ExperimentResults) -> Path:
    path = Path(exp_dir) / RESULTS_FILE
    write_atomic(path, results.model_dump_json(indent=1))
    return path
