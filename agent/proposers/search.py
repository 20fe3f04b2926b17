"""The built-in search: needs no LLM; explores the stage's launch-parameter space directly.

For the micro stage the space is, per kernel the parent launches, num_warps in the stage's allowed
values and num_stages within ±1 of the current value. Kernels are varied one at a time around the
parent (coordinate search), so k launched kernels cost about 12k evaluations, not 12^k.
"""

from __future__ import annotations

from agent.models import Candidate
from agent.proposers.base import ProposalContext
from agent.stages import Stage
from agent.variants import LaunchMove, VariantError, apply_move, micro_moves, site_stages


class SearchProposer:
    name = "search"
    # The micro stage's "Autotune Tip" rules (autotune wraps the kernel, 3-6 configs including the original)
    # tell an LLM how to hedge an edit with the autotuner. A search variant needs no hedge: it is one point of
    # the stage's space, evaluated directly. Every other rule of the stage applies to it.
    exempt_rules = frozenset({"autotune-wraps-jit", "config-count", "original-config"})

    def __init__(self, stage: Stage):
        self.stage = stage
        self.warps = self._allowed("num_warps")
        self.stages = self._allowed("num_stages")

    def _allowed(self, name: str) -> list[int]:
        for p in self.stage.parameters:
            if p.name == name:
                return [int(v) for v in p.values]
        raise ValueError(f"stage {self.stage.name!r} has no parameter {name!r} for the search to vary")

    def kernels_to_vary(self, ctx: ProposalContext) -> list[str]:
        """Kernels the parent actually launched at the evaluated size and defines in its own source."""
        out = []
        for k in sorted(ctx.parent_result.kernels_launched):
            try:
                site_stages(ctx.parent_source, k)
            except VariantError:
                continue
            out.append(k)
        return out

    def space(self, source: str, kernel: str) -> list[LaunchMove]:
        return micro_moves(source, kernel, self.warps, self.stages)

    def space_size(self, ctx: ProposalContext) -> int:
        return sum(len(self.space(ctx.parent_source, k)) for k in self.kernels_to_vary(ctx))

    def propose(self, ctx: ProposalContext) -> list[Candidate]:
        out: list[Candidate] = []
        seen = set(ctx.tried_sources)
        for kernel in self.kernels_to_vary(ctx):
            stages_now = set(site_stages(ctx.parent_source, kernel))
            for move in self.space(ctx.parent_source, kernel):
                source = apply_move(ctx.parent_source, kernel, move)
                if source in seen:
                    continue
                seen.add(source)
                out.append(
                    Candidate(
                        source=source,
                        proposer=self.name,
                        stage=ctx.stage,
                        parent_id=ctx.parent_id,
                        label=move.label(kernel, stages_now),
                        prompt_id=ctx.prompt_id,
                    )
                )
        return out
