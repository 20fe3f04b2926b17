"""A deterministic proposer that plays back a script: it drives the real loop in tests and demos where
neither an LLM nor a searchable stage is at hand (the way agent/llm/scripted.py stands in for an endpoint).

Each step of the script is the list of sources one `propose` call returns (labels "scripted s.i"); when
the script is played out, `propose` returns nothing, which ends the stage. `repairs` maps a failed source
to the fix `repair` returns. `seen` keeps what the loop showed it (the parent of each step, the metrics).
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.proposers.base import ProposalContext, Proposer
from agent.records import Candidate, NcuMetrics


class ScriptedProposer(Proposer):
    name = "scripted"

    def __init__(self, steps: Sequence[Sequence[str]], repairs: dict[str, str] | None = None):
        self.steps = [list(step) for step in steps]
        self.repairs = dict(repairs or {})
        self.parents: list[str] = []  # the parent source of each propose call, in order
        self.metrics: list[NcuMetrics | None] = []  # the metrics observe_profile was given, in order

    def propose(self, ctx: ProposalContext) -> list[Candidate]:
        self.parents.append(ctx.parent_source)
        if not self.steps:
            return []
        number = len(self.parents)
        return [
            ctx.candidate(src, f"scripted {number}.{i}", self.name)
            for i, src in enumerate(self.steps.pop(0), 1)
        ]

    def repair(self, ctx: ProposalContext, source: str, error_message: str) -> Candidate | None:
        fixed = self.repairs.pop(source, None)
        return None if fixed is None else ctx.candidate(fixed, "scripted repair", self.name)

    def observe_profile(self, metrics: NcuMetrics | None) -> None:
        self.metrics.append(metrics)
