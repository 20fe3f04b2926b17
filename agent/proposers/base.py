"""What every proposer is given, what it returns, and everything the loop may ask of it.

`Proposer` is the one interface the loop (agent/loop.py) and the pipeline (agent/pipeline.py) use: every
method but `propose` has a no-op default, so a proposer declares only what it does. `proposer_class`
finds a proposer by its short name (`search`, `llm`).
"""

from __future__ import annotations

import importlib
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from agent.records import Candidate, EvalResult, NcuMetrics, ProblemSpec


class ProposalContext(BaseModel):
    """The state a proposer sees at one iteration of a stage."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    problem: ProblemSpec
    stage: str
    iteration: int
    parent_id: int | None  # None: the first stage, whose parent is the PyTorch reference
    parent_source: str
    parent_result: EvalResult
    prompt_text: str
    prompt_id: int
    tried_sources: set[str]

    def candidate(self, source: str, label: str, proposer: str) -> Candidate:
        """A candidate of this step: its parent and prompt are the step's."""
        return Candidate(
            source=source,
            proposer=proposer,
            stage=self.stage,
            parent_id=self.parent_id,
            label=label,
            prompt_id=self.prompt_id,
        )

    def search_candidate(self, source: str, label: str) -> Candidate:
        """A built-in search's candidate at this step: `label` says what it moved."""
        return self.candidate(source, label, "search")


class Proposer:
    """Turns a stage's context into candidates. Subclasses set `name` and implement `propose`."""

    name: ClassVar[str] = ""
    # Stage rules (their last id part, e.g. "config-count") this proposer's candidates need not follow.
    exempt_rules: ClassVar[frozenset[str]] = frozenset()
    # True: an empty step means the proposer has nothing left (asking again gives nothing new), so the
    # stage ends at once; False: the loop asks again up to its `patience` (an LLM may answer next time).
    ends_when_empty: ClassVar[bool] = False

    def propose(self, ctx: ProposalContext) -> list[Candidate]:
        """Candidates to evaluate next; an empty list ends the stage (see `ends_when_empty`)."""
        raise NotImplementedError

    def repair(self, ctx: ProposalContext, source: str, error_message: str) -> Candidate | None:
        """A fixed version of a failed candidate, or None (the default: this proposer does not repair)."""
        return None

    def observe_profile(self, metrics: NcuMetrics | None) -> None:
        """The best kernel's ncu metrics (the seed's JSON form) before each step; default: ignored."""

    def rejected(self, ctx: ProposalContext) -> list[tuple[Candidate, EvalResult]]:
        """What the last propose()/repair() call produced that is no candidate but must be recorded (an
        LLM reply without code, or whose code does not parse), with its verdict. Default: nothing."""
        return []

    def errors(self) -> list[str]:
        """Requests of the last propose()/repair() call that failed for good, for the run's log."""
        return []

    @property
    def notes(self) -> list[str]:
        """What the proposer could not vary, and why: the pipeline adds these to the stage's notes."""
        return []

    def close(self) -> None:
        """Release what the proposer holds (an HTTP client, a cache); called once, at the end of a run."""


# Short name -> "module:Class", imported on first use (the LLM proposer brings the openai client).
PROPOSERS = {
    "search": "agent.proposers.search:SearchProposer",
    "llm": "agent.proposers.llm:LLMProposer",
    "scripted": "agent.proposers.scripted:ScriptedProposer",
}


def proposer_class(name: str) -> type[Proposer]:
    """The proposer registered as `name`; KeyError names the known ones."""
    if name not in PROPOSERS:
        raise KeyError(f"unknown proposer {name!r} ({', '.join(PROPOSERS)})")
    module, cls = PROPOSERS[name].split(":")
    found: type[Proposer] = getattr(importlib.import_module(module), cls)
    return found


OCCUPANCY = "sm__warps_active.avg.pct_of_peak_sustained_active"
LOW_OCCUPANCY_PCT = 50.0  # below: few warps resident, latency is not hidden


def last_metric(metrics: NcuMetrics | None, kernel: str, names: tuple[str, ...]) -> float | None:
    """The kernel's last profiled launch's value of the first of `names` it has."""
    value = None
    for launch in (metrics or {}).get(kernel, []):
        for name in names:
            v = launch.get(name)
            if isinstance(v, int | float):
                value = float(v)
                break
    return value
