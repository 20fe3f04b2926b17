"""The built-in search over a stage's tiling space: BLOCK sizes, grid multipliers, then num_warps.

The space of each kernel the parent launched is `agent.source.tiling_space.tiling_space` of the parent at the
time the
kernel's turn comes (docs/stages.md, "The tiling search"). Strategies:
- "coordinate" (default): axis by axis (each BLOCK size in the order the code names them, then each grid
  multiplier, then num_warps), one candidate a step: the neighbour one power of two away in the direction
  the profile suggests (`first_direction`). While a step beats the best, the next goes on the same way;
  when the first step does not, the other direction is tried once; then the next axis. A candidate that is
  invalid (outside the stage's values), already tried, or fails (compile error, wrong values: a BLOCK that
  breaks the kernel) counts as no gain. The stage's budget of iterations bounds the evaluations.
- "exhaustive": every point of every kernel's space in one step (the reference the search is judged by).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agent.prompt.stages import Stage
from agent.proposers.base import LOW_OCCUPANCY_PCT, OCCUPANCY, ProposalContext, last_metric
from agent.records import Candidate
from agent.source.tiling_points import BLOCK, WARPS, Point, TilingSpace
from agent.source.tiling_space import UnknownKernel, tiling_space
from agent.source.variants import VariantError

MULTIPLIER_PARAMETER = "programs per SM"
SPILLING = "derived__local_spilling_requests_pct"
DRAM = (
    "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",  # the memory metric set's name
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",  # the seed set's
)
LOW_DRAM_PCT = 60.0  # below: the kernel does not keep DRAM busy


def first_direction(kind: str, feeds_grid: bool, metrics: dict | None, kernel: str) -> tuple[int, str]:
    """Which way to try an axis first (+1: up, -1: down), from the parent's profile, and why.

    - Registers spill (derived__local_spilling_requests_pct > 0): smaller BLOCK sizes and more warps first
      (fewer elements, so less state, per thread).
    - The GPU is under-filled: DRAM throughput below 60% of peak, or achieved occupancy below 50% where the
      profile has it (not in the memory set). Then more programs first: a smaller BLOCK size where it sets
      the number of programs (it is in the grid), a larger grid multiplier, more warps.
    - Otherwise larger BLOCK sizes first (wider loads, fewer programs or fewer loop trips over a row; also
      when the GPU is under-filled but the BLOCK size does not set the grid: more bytes in flight per
      program), fewer programs per SM and fewer warps (more elements per thread) first.
    """
    spills = last_metric(metrics, kernel, (SPILLING,))
    dram = last_metric(metrics, kernel, DRAM)
    occupancy = last_metric(metrics, kernel, (OCCUPANCY,))
    if spills and kind in (BLOCK, WARPS):
        return (-1 if kind == BLOCK else +1), f"registers spill ({spills:g}% of requests)"
    low = [
        f"DRAM {dram:g}% of peak" if dram is not None and dram < LOW_DRAM_PCT else "",
        f"occupancy {occupancy:g}%" if occupancy is not None and occupancy < LOW_OCCUPANCY_PCT else "",
    ]
    under = ", ".join(x for x in low if x)
    if kind == BLOCK:
        return (-1, f"{under}: more programs") if under and feeds_grid else (+1, under)
    if under:
        return +1, under
    if kind == WARPS and occupancy is not None:
        return -1, f"occupancy {occupancy:g}%"
    return -1, ""


@dataclass
class _Walk:
    """The coordinate search over one kernel's space."""

    space: TilingSpace
    point: Point
    axis: int = 0
    direction: int = 0  # 0: the axis has not started
    moved: bool = False  # a step along this axis beat the best
    reversed: bool = False
    pending: tuple[Point, str] | None = None  # the point proposed last, and its source
    why: str = ""

    def advance(self, gained: bool) -> None:
        if gained:
            self.moved = True
        elif not self.moved and not self.reversed:
            self.direction, self.reversed = -self.direction, True
        else:
            self.axis, self.direction, self.moved, self.reversed = self.axis + 1, 0, False, False


@dataclass
class TilingSearch:
    """The search of a stage with BLOCK parameters (SearchProposer's tiling mode). `notes` gathers what it
    could not vary and why; the pipeline adds them to the stage's notes."""

    stage: Stage
    strategy: str = "coordinate"
    metrics: dict | None = None
    notes: list[str] = field(default_factory=list)
    _kernels: list[str] | None = None
    _walk: _Walk | None = None
    _done: bool = False

    def __post_init__(self) -> None:
        values = {p.name: tuple(int(v) for v in p.values) for p in self.stage.parameters if p.values}
        self.blocks = {n: v for n, v in values.items() if "BLOCK" in n.upper()}
        self.warps = values.get("num_warps")
        rules = self.stage.constraints.rule_ids()
        self.multipliers = values.get(MULTIPLIER_PARAMETER) if "grid-mapping" not in rules else None

    def space(self, source: str, kernel: str) -> TilingSpace:
        return tiling_space(source, kernel, self.blocks, self.warps, self.multipliers)

    def spaces(self, ctx: ProposalContext) -> list[TilingSpace]:
        """The space of each kernel the parent launched and defines (searchable or not)."""
        out = []
        for k in sorted(ctx.parent_result.kernels_launched):
            try:
                out.append(self.space(ctx.parent_source, k))
            except UnknownKernel:
                continue  # not this source's kernel (a library's): nothing to vary
            except VariantError as e:
                out.append(TilingSpace(k, ctx.parent_source, (), (), (f"{k}: {e}",)))
        return out

    def space_size(self, ctx: ProposalContext) -> int:
        """Distinct sources of the space but the parent: the product over kernels (an exhaustive sweep)."""
        sizes = [len(s.variants()) + 1 for s in self.spaces(ctx) if s.searchable]
        return math.prod(sizes) - 1 if sizes else 0

    def _note_unexposed(self, spaces: list[TilingSpace]) -> None:
        for s in spaces:
            self.notes += [f"written out: {n}" for n in s.written if f"written out: {n}" not in self.notes]
            if not s.searchable:
                self.notes.append(f"not searchable: {s.why_not()}")
            elif s.unexposed:
                self.notes.append(f"left as they are: {'; '.join(s.unexposed)}")

    def propose(self, ctx: ProposalContext) -> list[Candidate]:
        if self._done:
            return []
        if self.strategy == "exhaustive":
            self._done = True
            spaces = self.spaces(ctx)
            self._note_unexposed(spaces)
            seen = set(ctx.tried_sources)
            out = []
            for s in (s for s in spaces if s.searchable):
                for label, source in s.variants().items():
                    if source not in seen:
                        seen.add(source)
                        out.append(ctx.search_candidate(source, label))
            return out
        if self._kernels is None:
            spaces = self.spaces(ctx)
            self._note_unexposed(spaces)
            self._kernels = [s.kernel for s in spaces if s.searchable]
        while True:
            if self._walk is None:
                if not self._kernels:
                    self._done = True
                    return []
                try:
                    space = self.space(ctx.parent_source, self._kernels.pop(0))
                except VariantError as e:
                    self.notes.append(f"not searchable: {e}")
                    continue
                self._walk = _Walk(space, space.origin)
            found = self._next(self._walk, ctx)
            if found is not None:
                return [found]
            self._walk = None

    def _next(self, walk: _Walk, ctx: ProposalContext) -> Candidate | None:
        space = walk.space
        if walk.pending is not None:
            point, source = walk.pending
            walk.pending = None
            gained = ctx.parent_source == source
            if gained:
                walk.point = point
            walk.advance(gained)
        current = space.source(walk.point)
        while walk.axis < len(space.axes):
            axis = space.axes[walk.axis]
            if walk.direction == 0:
                walk.direction, walk.why = first_direction(
                    axis.kind, axis.feeds_grid, self.metrics, space.kernel
                )
            step = space.step(walk.point, walk.axis, walk.direction)
            source = space.source(step) if step is not None else None
            if step is None or source == current or source in ctx.tried_sources:
                walk.advance(False)
                continue
            walk.pending = (step, source)
            move = f"{axis.name} {'x2' if walk.direction > 0 else '/2'}"
            # A label claims a gain (or its absence) only when the parent was timed (never on the CPU).
            t = ctx.parent_result.timings
            timed = t is not None and t.candidate is not None
            other_way = ", the other way gave no gain" if timed else ", the other way too (nothing timed)"
            why = " again" if walk.moved else other_way if walk.reversed else ""
            if not why and walk.why:
                why = f" first: {walk.why}"
            return ctx.search_candidate(source, f"{space.label(step)} ({move}{why})")
        return None
