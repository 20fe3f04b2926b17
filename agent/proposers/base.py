"""What every proposer is given and must return."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict

from agent.records import Candidate, EvalResult, ProblemSpec


class ProposalContext(BaseModel):
    """The state a proposer sees at one iteration of a stage."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    problem: ProblemSpec
    stage: str
    iteration: int
    parent_id: int
    parent_source: str
    parent_result: EvalResult
    prompt_text: str
    prompt_id: int
    tried_sources: set[str]

    def search_candidate(self, source: str, label: str) -> Candidate:
        """A built-in search's candidate at this step: `label` says what it moved."""
        return Candidate(
            source=source,
            proposer="search",
            stage=self.stage,
            parent_id=self.parent_id,
            label=label,
            prompt_id=self.prompt_id,
        )


class Proposer(Protocol):
    name: str

    def propose(self, ctx: ProposalContext) -> list[Candidate]:
        """Candidates to evaluate next; an empty list ends the stage."""
        ...


OCCUPANCY = "sm__warps_active.avg.pct_of_peak_sustained_active"
LOW_OCCUPANCY_PCT = 50.0  # below: few warps resident, latency is not hidden


def last_metric(metrics: dict | None, kernel: str, names: tuple[str, ...]) -> float | None:
    """The kernel's last profiled launch's value of the first of `names` it has."""
    value = None
    for launch in (metrics or {}).get(kernel, []):
        for name in names:
            v = launch.get(name)
            if isinstance(v, int | float):
                value = float(v)
                break
    return value
