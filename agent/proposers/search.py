"""The built-in search: needs no LLM; explores a stage's parameter space directly.

Which space depends on the stage's parameters (`SearchProposer.mode`):
- "tiling" (a `BLOCK*` parameter with values, and no block-sizes rule: the tiling stage): BLOCK sizes, grid
  multipliers and num_warps, searched by agent.proposers.tiling_search;
- "launch" (num_warps and num_stages with values: occupancy, micro): the rest of this module.

The launch space, per kernel the parent launches: num_warps over the stage's allowed values, and each
config's num_stages moved by the same delta (within ±1 where the stage has the num-stages rule, as micro
does).

Strategies:
- "coordinate" (default): per kernel, first the num_warps axis at the current num_stages, tried in the
  order the profile suggests (low achieved occupancy: more warps first; high: fewer first), then the
  num_stages axis around the best num_warps. 4 + 2 evaluations instead of the 12 of micro's space, and
  kernels one after another instead of the product of their spaces.
- "exhaustive": every point of every kernel's space in one step (the reference the search is judged by).

Before either, autotune configs built by code are written out as the literal list they evaluate to
(agent/source/config_builders.py; pruned to the stage's most configs), and in a stage whose rules want
autotune around the kernel (micro), a plain launch is first wrapped in an autotune of 3-6 configs around
it (agent/source/autotune_wrap.py). A move that gives a launch the num_warps and num_stages it has already
(Triton's defaults written out) is not a new candidate. When the search proposes nothing, `notes` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.prompt.stages import Stage
from agent.proposers.base import LOW_OCCUPANCY_PCT, OCCUPANCY, ProposalContext, Proposer, last_metric
from agent.proposers.tiling_search import MULTIPLIER_PARAMETER, TilingSearch
from agent.records import Candidate, NcuMetrics
from agent.source.autotune_wrap import wrapped
from agent.source.config_builders import written_out
from agent.source.variants import (
    LaunchMove,
    VariantError,
    apply_move,
    current_config,
    launch_values,
    site_stages,
    stage_moves,
)


@dataclass
class _Phase:
    kernel: str
    axis: str  # "wrap" (micro, a plain launch: autotune around it), "warps" or "stages"


def warps_order(warps: list[int], current: int, metrics: dict | None, kernel: str) -> list[int]:
    """The num_warps values in the order to try them, from the parent's achieved occupancy if known."""
    occupancy = last_metric(metrics, kernel, (OCCUPANCY,))
    if occupancy is None:
        return sorted(warps, key=lambda w: (w == current, abs(w - current)))  # nearest first, current last
    # Few warps resident: more warps per program hide more latency. Many: fewer warps, more programs.
    return sorted(warps, key=lambda w: (w == current, -w if occupancy < LOW_OCCUPANCY_PCT else w))


class SearchProposer(Proposer):
    name = "search"
    ends_when_empty = True  # deterministic: a step with nothing new means the space is done
    # The micro stage's "Autotune Tip" rules (autotune wraps the kernel, 3-6 configs including the original)
    # tell an LLM how to hedge an edit with the autotuner. A search variant needs no hedge: it is one point of
    # the stage's space, evaluated directly. Every other rule of the stage applies to it.
    exempt_rules = frozenset({"autotune-wraps-jit", "config-count", "original-config"})
    STRATEGIES = ("coordinate", "exhaustive")

    def __init__(self, stage: Stage, strategy: str = "coordinate"):
        if strategy not in self.STRATEGIES:
            raise ValueError(f"unknown search strategy {strategy!r} ({', '.join(self.STRATEGIES)})")
        self.stage, self.strategy = stage, strategy
        self.mode = self.search_mode(stage)
        self.phases: list[_Phase] | None = None
        self.metrics: dict | None = None
        self.tiling: TilingSearch | None = None
        self._notes: list[str] = []
        self._bases: dict[str, str] = {}
        self._proposed = 0
        if self.mode == "tiling":
            self.tiling = TilingSearch(stage, strategy)
            return
        self.warps = self._allowed("num_warps")
        self.stages = self._allowed("num_stages")
        rules = stage.constraints.rule_ids()
        self.max_delta = 1 if "num-stages" in rules else max(self.stages)
        self.wraps = "autotune-wraps-jit" in rules

    @staticmethod
    def search_mode(stage: Stage) -> str | None:
        """ "tiling", "launch", or None when the stage's parameters give the search nothing to turn."""
        names = {p.name for p in stage.parameters if p.values}
        if any("BLOCK" in n.upper() for n in names) and "block-sizes" not in stage.constraints.rule_ids():
            return "tiling"
        if {"num_warps", "num_stages"} <= names:
            return "launch"
        return None

    @classmethod
    def can_search(cls, stage: Stage) -> bool:
        return cls.search_mode(stage) is not None

    @classmethod
    def knobs(cls, stage: Stage) -> str:
        """What the search turns in `stage`, for the run's banner."""
        if cls.search_mode(stage) == "tiling":
            names = {p.name for p in stage.parameters if p.values}
            extra = [n for n in (MULTIPLIER_PARAMETER, "num_warps") if n in names]
            return ", ".join(["BLOCK sizes", *extra])
        return "num_warps, num_stages" if cls.can_search(stage) else ""

    @property
    def notes(self) -> list[str]:
        """What the search could not search, and why (the pipeline adds these to the stage's notes)."""
        return self.tiling.notes if self.tiling is not None else self._notes

    def _note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)

    def base(self, ctx: ProposalContext) -> str:
        """The parent with code-built autotune configs written out (at most the stage's number)."""
        if ctx.parent_source not in self._bases:
            most = self.stage.constraints.autotune_max_configs
            source, done, failed = written_out(ctx.parent_source, most, ctx.parent_result.chosen_configs)
            for n in done + failed:
                self._note(n)
            self._bases[ctx.parent_source] = source
        return self._bases[ctx.parent_source]

    def _allowed(self, name: str) -> list[int]:
        for p in self.stage.parameters:
            if p.name == name and p.values:
                return [int(v) for v in p.values]
        raise ValueError(f"stage {self.stage.name!r} has no parameter {name!r} with values for the search")

    def observe_profile(self, metrics: NcuMetrics | None) -> None:
        """The parent's ncu metrics (seed JSON form), used to order the next tries."""
        self.metrics = metrics
        if self.tiling is not None:
            self.tiling.metrics = metrics

    def kernels_to_vary(self, ctx: ProposalContext) -> list[str]:
        """Kernels the parent actually launched at the evaluated size and defines in its own source."""
        out = []
        for k in sorted(ctx.parent_result.kernels_launched):
            try:
                site_stages(self.base(ctx), k)
            except VariantError as e:
                self._note(f"{k} not varied: {e}")
                continue
            out.append(k)
        return out

    def space(self, source: str, kernel: str) -> list[LaunchMove]:
        """The kernel's launch moves, but the one that leaves its launch as it is (Triton's defaults written
        out would otherwise be evaluated again as if new)."""
        moves = stage_moves(source, kernel, self.warps, self.stages, self.max_delta)
        now = launch_values(source, kernel, "num_warps")
        return [m for m in moves if not (m.stage_delta == 0 and now == {m.num_warps})]

    def space_size(self, ctx: ProposalContext) -> int:
        """Points of the whole space: the product over launched kernels (what an exhaustive sweep costs)."""
        if self.tiling is not None:
            return self.tiling.space_size(ctx)
        kernels = self.kernels_to_vary(ctx)
        base = self.base(ctx)
        return (
            math.prod(len(self.space(base, k)) + self._wrappable(base, k) for k in kernels) if kernels else 0
        )

    def propose(self, ctx: ProposalContext) -> list[Candidate]:
        if self.tiling is not None:
            return self.tiling.propose(ctx)
        out = self._propose(ctx)
        self._proposed += len(out)
        if not out and not self._proposed:  # a stage that proposes nothing says why
            if not ctx.parent_result.kernels_launched:
                self._note("the kernel it starts from launched no Triton kernel that could be varied")
            elif self.kernels_to_vary(ctx):  # else each kernel's reason is noted already
                self._note("every point of the launch space was tried already (in this or an earlier stage)")
        return out

    def _propose(self, ctx: ProposalContext) -> list[Candidate]:
        if self.strategy == "exhaustive":
            if self.phases == []:
                return []
            self.phases = []
            kernels = self.kernels_to_vary(ctx)
            moves = [(k, m) for k in kernels for m in self.space(self.base(ctx), k)]
            return self._wraps(ctx, kernels) + self._candidates(ctx, moves)
        if self.phases is None:
            axes = ("wrap", "warps", "stages") if self.wraps else ("warps", "stages")
            self.phases = [_Phase(k, axis) for k in self.kernels_to_vary(ctx) for axis in axes]
        while self.phases:
            phase = self.phases.pop(0)
            if phase.axis == "wrap":
                out = self._wraps(ctx, [phase.kernel])
            else:
                out = self._candidates(ctx, [(phase.kernel, m) for m in self._phase_moves(ctx, phase)])
            if out:
                return out
        return []

    def _wrappable(self, source: str, kernel: str) -> int:
        """1 when the stage wraps plain launches and this kernel's can be wrapped, else 0."""
        try:
            return int(self.wraps and bool(wrapped(source, kernel, self.warps, self.stages)))
        except VariantError:
            return 0

    def _wraps(self, ctx: ProposalContext, kernels: list[str]) -> list[Candidate]:
        """Micro: each plain-launched kernel wrapped in an autotune around its launch (one candidate each)."""
        if not self.wraps:
            return []
        out = []
        for k in kernels:
            try:
                source, label = wrapped(self.base(ctx), k, self.warps, self.stages)
            except VariantError:
                continue  # autotuned already, or too few configs allowed: the moves below vary it
            if source not in ctx.tried_sources:
                out.append(ctx.search_candidate(source, label))
        return out

    def _phase_moves(self, ctx: ProposalContext, phase: _Phase) -> list[LaunchMove]:
        current = current_config(self.base(ctx), phase.kernel).num_warps
        moves = self.space(self.base(ctx), phase.kernel)
        if phase.axis == "warps":
            order = warps_order(self.warps, current, self.metrics, phase.kernel)
            return [LaunchMove(num_warps=w, stage_delta=0) for w in order if LaunchMove(w, 0) in moves]
        return [m for m in moves if m.num_warps == current and m.stage_delta != 0]

    def _candidates(self, ctx: ProposalContext, moves: list[tuple[str, LaunchMove]]) -> list[Candidate]:
        out: list[Candidate] = []
        base = self.base(ctx)
        seen = {*ctx.tried_sources, ctx.parent_source}
        for kernel, move in moves:
            source = apply_move(base, kernel, move)
            if source in seen:
                continue
            seen.add(source)
            stages_now = set(site_stages(base, kernel))
            out.append(ctx.search_candidate(source, move.label(kernel, stages_now)))
        return out
