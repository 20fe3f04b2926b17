"""What every proposer is given and must return."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict

from agent.models import Candidate, EvalResult, ProblemSpec


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


class Proposer(Protocol):
    name: str

    def propose(self, ctx: ProposalContext) -> list[Candidate]:
        """Candidates to evaluate next; an empty list ends the stage."""
        ...
