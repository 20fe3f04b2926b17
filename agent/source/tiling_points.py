"""A kernel's tiling space as data: its axes (the searchable parameters a source exposes, found by
agent/source/tiling_space.py) and its points, each the source edited at the axes' literals.

An axis is one such parameter over all its literals (every config of an autotune list, every launch). A
point of the space is one shift per axis: each literal of the axis times 2**shift, so an autotune list
moves up or down as a whole and keeps its length. A point is valid when every value it gives is one of the
stage's allowed values. num_warps is scaled to the block: a config's or launch's num_warps follows the
shifts of its tile (the BLOCK sizes that set the grid, or all of its BLOCK sizes when none does), brought
into the allowed range, so that a BLOCK move keeps the elements per thread; the num_warps axis changes them.

Points are relative to one base source (the parent the space was built from), so a point always names the
same source; `TilingSpace.source(point)` edits the base at the literals' AST positions, formatting kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

from agent.source.tiling_literals import RUNTIME_ONE, ScaledSlot, Slot
from agent.source.variants import VariantError, apply_edits

BLOCK, MULTIPLIER, WARPS = "block", "multiplier", "warps"
MAX_SHIFT = 16


def scaled(value: int, shift: int) -> int | None:
    """value * 2**shift, or None when that is not an integer."""
    if shift >= 0:
        return value << shift
    return value >> -shift if value % (1 << -shift) == 0 else None


@dataclass(frozen=True)
class Axis:
    """One searchable parameter of a kernel: all of its literals, moved together by a power of two."""

    kind: str  # BLOCK, MULTIPLIER or WARPS
    name: str  # BLOCK_SIZE_D, PROGRAMS_PER_SM, num_warps
    slots: tuple[Slot, ...]
    allowed: tuple[int, ...]
    feeds_grid: bool = False  # (BLOCK) the number of programs depends on it

    @property
    def base(self) -> tuple[int, ...]:
        return tuple(s.value for s in self.slots)

    @property
    def runtime(self) -> bool:
        """A BLOCK size computed at run time: its values are factors of the result (RUNTIME_ONE: as is)."""
        return any(isinstance(s, ScaledSlot) for s in self.slots)

    def shown(self, values: tuple[int, ...]) -> str:
        if not self.runtime:
            return "/".join(map(str, values))
        v = values[0]
        if v == RUNTIME_ONE:
            return "its result"
        return f"its result x{v // RUNTIME_ONE}" if v > RUNTIME_ONE else f"its result /{RUNTIME_ONE // v}"

    def values(self, shift: int) -> tuple[int, ...] | None:
        """The axis' values at `shift`; None when one is not allowed (shift 0: the base, always)."""
        if shift == 0:
            return self.base
        out = tuple(scaled(v, shift) for v in self.base)
        return out if all(v in self.allowed for v in out) else None  # type: ignore[return-value]

    def shifts(self) -> list[int]:
        return [k for k in range(-MAX_SHIFT, MAX_SHIFT + 1) if self.values(k) is not None]


Point = tuple[int, ...]


@dataclass(frozen=True)
class TilingSpace:
    """The tiling space of one kernel of `base`; `unexposed` says what is not searchable, and why."""

    kernel: str
    base: str
    axes: tuple[Axis, ...]
    # Per num_warps slot: the BLOCK axes of its config or launch that make its tile (those that set the grid,
    # else all of them); its num_warps follows their shifts. None where one of its BLOCK sizes is not exposed.
    links: tuple[tuple[int, ...] | None, ...] = ()
    unexposed: tuple[str, ...] = ()
    written: tuple[str, ...] = ()  # code-built autotune configs written out as a literal list in `base`

    @property
    def origin(self) -> Point:
        return (0,) * len(self.axes)

    @property
    def searchable(self) -> bool:
        return bool(self.axes)

    def why_not(self) -> str:
        return "; ".join(self.unexposed) or f"{self.kernel} exposes no BLOCK size or grid multiplier"

    def axis_index(self, kind: str) -> list[int]:
        return [i for i, a in enumerate(self.axes) if a.kind == kind]

    def values(self, point: Point) -> list[tuple[int, ...]] | None:
        """Each axis' values at `point`, or None if the point is invalid. num_warps follows the tile: each
        config's or launch's num_warps is multiplied by 2**(warps shift + the shifts of its tile's BLOCK
        axes), then brought into the allowed range (clamped), so that a BLOCK move keeps the elements per
        thread and the num_warps axis changes them."""
        if point == self.origin:
            return [a.base for a in self.axes]
        vals = []
        for axis, shift in zip(self.axes, point, strict=True):
            v = axis.values(shift)
            if v is None:
                return None
            vals.append(v)
        for i in self.axis_index(WARPS):
            axis = self.axes[i]
            vals[i] = tuple(
                _nearest(base * 2.0 ** (point[i] + sum(point[a] for a in link or ())), axis.allowed)
                for base, link in zip(axis.base, self.links, strict=True)
            )
        return vals

    def step(self, point: Point, axis: int, direction: int) -> Point | None:
        """The neighbour of `point` one power of two up (+1) or down (-1) along `axis`, if valid."""
        moved = tuple(k + direction if i == axis else k for i, k in enumerate(point))
        return moved if self.values(moved) is not None else None

    def points(self) -> list[Point]:
        """Every valid point, the origin first."""
        grid = product(*(a.shifts() for a in self.axes))
        return sorted((p for p in grid if self.values(p) is not None), key=lambda p: (p != self.origin, p))

    def source(self, point: Point) -> str:
        if point == self.origin:
            return self.base
        vals = self.values(point)
        if vals is None:
            raise VariantError(f"point {point} is outside the tiling space of {self.kernel}")
        edits = [
            slot.edit(v)
            for axis, vs in zip(self.axes, vals, strict=True)
            for slot, v in zip(axis.slots, vs, strict=True)
            if v != slot.value
        ]
        return apply_edits(self.base, edits)

    def label(self, point: Point) -> str:
        vals = self.values(point) or []
        parts = [f"{a.name}={a.shown(v)}" for a, v in zip(self.axes, vals, strict=True)]
        return f"{self.kernel}: {' '.join(parts)}"

    def variants(self) -> dict[str, str]:
        """label -> source of every valid point but the origin, one per distinct source (first label wins)."""
        out: dict[str, str] = {}
        seen = {self.base}
        for p in self.points():
            src = self.source(p)
            if src not in seen:
                seen.add(src)
                out[self.label(p)] = src
        return out


def _nearest(value: float, allowed: tuple[int, ...]) -> int:
    """The allowed value closest to `value` on a log scale (so out-of-range values clamp to the ends)."""
    return min(allowed, key=lambda a: (abs(math.log2(a / value)), a))
