"""The loop's profiling step: one ncu process for all accepted candidates of a step, never fatal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from agent.profiling.metric_sets import load_metric_set
from agent.profiling.ncu import profile_candidates
from agent.profiling.target import ProfileCandidate
from agent.records import EvalResult, NcuMetrics, ProblemSpec, ProfileRecord
from agent.store import Store

if TYPE_CHECKING:
    from agent.loop import LoopSettings


class ProfileOutcome(BaseModel):
    """What the next prompt gets: metrics in the seed's JSON form and ncu's ranked rules, or why not."""

    metrics: NcuMetrics | None = None
    rules: list[str] = []
    unavailable_reason: str | None = None


def _skip_reason(settings: LoopSettings) -> str | None:
    if not settings.policy.profile:
        return "profiling was switched off for this run (--no-profile)"
    if settings.device != "cuda":
        return "no GPU in this run: Nsight Compute needs a CUDA GPU"
    return None


def profile_step(
    problem: ProblemSpec, items: list[tuple[int, str, EvalResult]], settings: LoopSettings, store: Store
) -> list[ProfileOutcome]:
    if not items:
        return []
    reason = _skip_reason(settings)
    if reason is not None:
        return [ProfileOutcome(unavailable_reason=reason) for _ in items]

    metric_set = load_metric_set(settings.metric_set)
    out_dir = settings.run_dir / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = (settings.hooks.profiler or profile_candidates)(
        problem,
        [ProfileCandidate(source=src, pinned_configs=res.chosen_configs) for _, src, res in items],
        metric_set,
        out_dir,
        name=f"step_c{items[0][0]}",
    )
    outcomes = []
    for (cand_id, _, _), r in zip(items, results, strict=True):
        store.add_profile(
            ProfileRecord(
                candidate_id=cand_id,
                ok=r.ok,
                error=r.error,
                metric_set=metric_set.name,
                report_path=str(r.report_path) if r.report_path else None,
                metrics=r.metrics,
                rules=r.rules,
                provenance=r.provenance.model_dump(mode="json"),
            )
        )
        outcomes.append(
            ProfileOutcome(metrics=r.metrics, rules=r.rules)
            if r.ok
            else ProfileOutcome(unavailable_reason=r.error)
        )
    return outcomes
