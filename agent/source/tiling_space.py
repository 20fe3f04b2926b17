"""The tiling space of a kernel: the BLOCK sizes, grid multipliers and num_warps a source exposes as integer
literals, and the source edits that move them by powers of two (docs/stages.md, "The tiling search").

What is exposed, per kernel launched as `kernel[grid](...)`:
- an autotuned kernel: the `BLOCK*` entries of every `triton.Config({...})` dict that are integer literals,
  and each config's num_warps (Triton's default 4 where a config gives none);
- a plain `@triton.jit` kernel: each launch's `BLOCK*=` keyword when it is an integer literal, or a name
  bound once to an integer literal: a local variable, a module constant or a `self.` attribute. The
  assignment is what changes, so every use of the name (the grid's included) changes with it. A literal
  keyword whose grid repeats the same number (`kernel[(triton.cdiv(n, 1024),)](..., BLOCK=1024)`) is not
  exposed: a change would not reach the grid. num_warps likewise (default 4 where absent);
- a grid multiplier: a name bound once to an integer literal that multiplies the SM count in the grid
  (`grid = (min(tiles, num_sms * PROGRAMS_PER_SM),)`).
- a capped run-time block, a name bound once to `min(<expression>, <int literal>)` (the common
  `BLOCK_SIZE = min(triton.next_power_of_2(n_cols), 4096)`): the cap is the literal that moves. The block
  is the smaller of the two, so moving the cap above what the expression gives changes nothing; the
  search then measures no gain and goes on.
- any other run-time block given by a call (`triton.next_power_of_2(n)`, `max(...)`, a settings helper such
  as Liger's `BLOCK_SIZE, num_warps = calculate_settings(n)`), as a launch keyword or a name bound once:
  the call's result is what moves, multiplied or divided by a power of two (`ScaledSlot`: the expression
  wrapped, or a statement scaling the name after a tuple assignment), from /4 to x4.
- autotune configs that code builds (a function, a comprehension) are first written out as the literal
  list they give (agent/source/config_builders.py); `TilingSpace.base` is that source.
Any other value computed at run time is not exposed, and the space says why (`TilingSpace.unexposed`).

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

import ast
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from itertools import product

from agent.source.config_builders import written_out
from agent.source.kernel_facts import Resolver, config_meta, function_params
from agent.source.variants import (
    DEFAULT_NUM_WARPS,
    VariantError,
    apply_edits,
    autotune_configs,
    dotted_name,
    find_kernels,
    keyword_insertion,
    launch_sites,
    node_span,
    offsets_of,
    parse_source,
    scope_nodes,
)

BLOCK, MULTIPLIER, WARPS = "block", "multiplier", "warps"
MAX_SHIFT = 16
_SM_COUNT = re.compile(r"^_?(get_)?((n|num|number_of)_?)?sms?(_count)?$")  # num_sms, NUM_SMS, sm_count


class UnknownKernel(VariantError):
    """The kernel is not defined, or not launched, in this source (a library's kernel, say)."""


@dataclass(frozen=True)
class Slot:
    """One integer literal of the base source that an axis edits (or where an absent num_warps goes)."""

    start: int
    end: int
    value: int
    text: str = "{}"  # replaces [start, end) with "{}" filled in: the value, or an inserted keyword

    def edit(self, value: int) -> tuple[int, int, str]:
        return self.start, self.end, self.text.replace("{}", str(value))


RUNTIME_ONE = 4  # a run-time BLOCK size's own value, on the axis' scale: 1..16 is its result /4..x4
RUNTIME_ALLOWED = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class ScaledSlot(Slot):
    """A BLOCK size computed at run time (`triton.next_power_of_2(n)`, a settings helper's result): the
    edit multiplies or divides the expression's result by a power of two. `name` set: the value comes from
    a tuple assignment (`BLOCK, num_warps = settings(n)`), and a statement scaling the name follows it."""

    expr: str = ""
    name: str = ""
    indent: str = ""

    def edit(self, value: int) -> tuple[int, int, str]:
        if self.name:
            scaled = _scale_text(self.name, value)
            return self.start, self.end, f"\n{self.indent}{self.name} = {scaled}"
        return self.start, self.end, _scale_text(f"({self.expr})", value)


def _scale_text(expr: str, value: int) -> str:
    if value >= RUNTIME_ONE:
        return f"{expr} * {value // RUNTIME_ONE}"
    return f"max({expr} // {RUNTIME_ONE // value}, 1)"


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
        if self.runtime:
            v = values[0]
            return (
                "its result"
                if v == RUNTIME_ONE
                else (
                    f"its result x{v // RUNTIME_ONE}"
                    if v > RUNTIME_ONE
                    else f"its result /{RUNTIME_ONE // v}"
                )
            )
        return "/".join(map(str, values))

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


def block_allowed(name: str, blocks: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """The allowed values of the stage's BLOCK parameter pattern that `name` matches (`BLOCK_*` also
    covers a bare `BLOCK`); case-insensitive, as the rules treat any case of BLOCK as a BLOCK size."""
    for pattern, allowed in blocks.items():
        p, n = pattern.upper(), name.upper()
        if fnmatchcase(n, p) or (p.endswith("_*") and n == p[:-2]):
            return allowed
    return None


# ---------------------------------------------------------------- finding the literals


class _Finder:
    def __init__(self, tree: ast.Module, source: str):
        self.tree, self.source = tree, source
        self.res = Resolver(tree)
        self.parent = self.res.parent
        self.pos = offsets_of(source)

    def slot(self, node: ast.AST, value: int) -> Slot:
        return Slot(*node_span(self.pos, node), value)

    def insertion(self, call: ast.Call, name: str) -> Slot:
        at, _, text = keyword_insertion(self.source, call, self.pos, f"{name}={{}}")
        return Slot(at, at, DEFAULT_NUM_WARPS, text)

    def up(self, node: ast.AST, kinds) -> ast.AST | None:
        while (node := self.parent.get(id(node))) is not None:  # type: ignore[assignment]
            if isinstance(node, kinds):
                return node
        return None

    # ---- a name or self.attribute bound once to an integer literal

    def named_literal(self, node: ast.expr, runtime: bool = False) -> tuple[Slot, str] | str:
        """(the literal's slot, the name) for a name bound once to an int literal (or, with `runtime`, to a
        call computing it at run time), else why not."""
        text = ast.unparse(node)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            cls = self.up(node, ast.ClassDef)
            if cls is None:
                return f"`{text}` is used outside a class"
            stores = [
                n
                for n in ast.walk(cls)
                if isinstance(n, ast.Attribute)
                and isinstance(n.ctx, ast.Store)
                and n.attr == node.attr
                and isinstance(n.value, ast.Name)
                and n.value.id == "self"
            ]
            stores += [n for n in scope_nodes(cls) if _stores_name(n, node.attr)]
            return self._single_literal(stores, text)
        if not isinstance(node, ast.Name):
            return f"`{text}` is computed at run time"
        scope: ast.AST | None = node
        while (scope := self.up(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)) is not None:
            if node.id in function_params(scope):  # type: ignore[arg-type]
                return f"`{node.id}` is a parameter of {getattr(scope, 'name', 'a lambda')}"
            stores = [n for n in scope_nodes(scope) if _stores_name(n, node.id)]
            if stores:
                return self._single_literal(stores, text, runtime)
        stores = [n for n in scope_nodes(self.tree) if _stores_name(n, node.id)]
        return self._single_literal(stores, text, runtime)

    def _single_literal(
        self, stores: list[ast.AST], text: str, runtime: bool = False
    ) -> tuple[Slot, str] | str:
        stores = [s for s in stores if isinstance(getattr(s, "ctx", None), ast.Store)]
        if not stores:
            return f"`{text}` is not assigned in this source"
        if len(stores) > 1:
            return f"`{text}` is assigned {len(stores)} times"
        assign = self.parent.get(id(stores[0]))
        if isinstance(assign, ast.Tuple):  # BLOCK, num_warps = settings(n)
            assign = self.parent.get(id(assign))
        value = getattr(assign, "value", None)
        single = (isinstance(assign, ast.Assign) and len(assign.targets) == 1) or isinstance(
            assign, ast.AnnAssign
        )
        if single and isinstance(value, ast.Constant) and type(value.value) is int:
            return self.slot(value, value.value), text
        if single and (cap := _cap(value)) is not None:  # min(<run-time value>, 4096): the cap moves
            return self.slot(cap, cap.value), text
        if runtime and isinstance(value, ast.Call):  # next_power_of_2(n), a settings helper: its result moves
            return self.runtime_slot(value, assign, stores[0]), text
        shown = ast.unparse(value) if isinstance(value, ast.expr) else "not a plain assignment"
        return f"`{text}` is computed at run time (`{shown}`)"

    def runtime_slot(self, value: ast.Call, assign: ast.AST | None, store: ast.AST) -> ScaledSlot:
        """The slot scaling a run-time BLOCK size: the expression itself, or after a tuple assignment."""
        start, end = node_span(self.pos, value)
        if isinstance(assign, ast.Assign) and isinstance(assign.targets[0], ast.Tuple):
            at = node_span(self.pos, assign)[1]
            indent = " " * assign.col_offset
            return ScaledSlot(at, at, RUNTIME_ONE, expr=ast.unparse(value), name=store.id, indent=indent)  # type: ignore[attr-defined]
        return ScaledSlot(start, end, RUNTIME_ONE, expr=ast.unparse(value))

    def literal_or_named(self, node: ast.expr, runtime: bool = False) -> tuple[Slot, str | None] | str:
        """The slot of a BLOCK value; with `runtime`, also one computed at run time by a call."""
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return self.slot(node, node.value), None
        if isinstance(node, ast.Name | ast.Attribute):
            found = self.named_literal(node, runtime)
            return found if isinstance(found, str) else (found[0], found[1])
        if runtime and isinstance(node, ast.Call):
            return self.runtime_slot(node, None, node), None
        return f"`{ast.unparse(node)}` is computed at run time"

    # ---- what a grid expression reads

    def grid_nodes(self, expr: ast.AST, depth: int = 0) -> Iterator[ast.AST]:
        """Every node of the grid expression, local names followed to their assignments."""
        for n in ast.walk(expr):
            yield n
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and depth < 6:
                for d in self.res.definitions(n):
                    if isinstance(d, ast.expr):
                        yield from self.grid_nodes(d, depth + 1)

    def multipliers(self, expr: ast.AST, depth: int = 0) -> Iterator[ast.expr]:
        """Names multiplying the SM count in the grid, through tuples, min/max and local names."""
        if depth > 6:
            return
        if isinstance(expr, ast.Tuple | ast.List):
            for e in expr.elts:
                yield from self.multipliers(e, depth + 1)
        elif isinstance(expr, ast.Lambda):
            yield from self.multipliers(expr.body, depth + 1)
        elif isinstance(expr, ast.Call) and dotted_name(expr.func).rsplit(".", 1)[-1] in _MIN_MAX:
            for a in expr.args:
                yield from self.multipliers(a, depth + 1)
        elif isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
            for side, other in ((expr.left, expr.right), (expr.right, expr.left)):
                if _is_name(side) and self.mentions_sms(other):
                    yield side
                yield from self.multipliers(side, depth + 1)
        elif isinstance(expr, ast.Name):
            for d in self.res.definitions(expr):
                if isinstance(d, ast.expr):
                    yield from self.multipliers(d, depth + 1)

    def mentions_sms(self, expr: ast.AST) -> bool:
        for n in self.grid_nodes(expr):
            ident = n.attr if isinstance(n, ast.Attribute) else n.id if isinstance(n, ast.Name) else ""
            if ident == "multi_processor_count" or _SM_COUNT.match(ident.lower()):
                return True
        return False


_MIN_MAX = {"min", "max", "minimum", "maximum"}


def _cap(value: ast.AST | None) -> ast.Constant | None:
    """The integer literal of `min(<expression>, <int>)` (either order), else None."""
    if not (isinstance(value, ast.Call) and dotted_name(value.func) == "min") or value.keywords:
        return None
    ints = [a for a in value.args if isinstance(a, ast.Constant) and type(a.value) is int]
    return ints[0] if len(value.args) == 2 and len(ints) == 1 else None


def _stores_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store)


def _is_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) or (
        isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
    )


@dataclass
class _Run:
    where: str
    blocks: dict[str, tuple[Slot, str | None] | str]  # BLOCK name -> (slot, bound name) or why not exposed
    warps: Slot | None  # None: computed, left as it is


def tiling_space(
    source: str,
    kernel: str,
    blocks: dict[str, tuple[int, ...]],
    warps: tuple[int, ...] | None = None,
    multipliers: tuple[int, ...] | None = None,
) -> TilingSpace:
    """The tiling space of `kernel` in `source`. `blocks`: the stage's BLOCK parameter patterns and their
    allowed values; `warps` / `multipliers`: allowed num_warps / programs per SM (None: not searched).
    Raises UnknownKernel when the kernel is not there or never launched as kernel[grid](...)."""
    base, written, failed = written_out(source)  # code-built autotune configs: the literal list they give
    space = _tiling_space(base, kernel, blocks, warps, multipliers)
    mine = tuple(n for n in written if n.startswith(f"{kernel}: "))
    why = tuple(n for n in failed if n.startswith(f"{kernel}: "))
    return replace(space, written=mine, unexposed=space.unexposed + why)


def _tiling_space(
    source: str,
    kernel: str,
    blocks: dict[str, tuple[int, ...]],
    warps: tuple[int, ...] | None,
    multipliers: tuple[int, ...] | None,
) -> TilingSpace:
    tree = parse_source(source)
    kernels = find_kernels(tree)
    if kernel not in kernels:
        raise UnknownKernel(f"no @triton.jit kernel named {kernel!r}")
    sites = launch_sites(tree, kernel)
    if not sites:
        raise UnknownKernel(f"kernel {kernel!r} is never launched as {kernel}[grid](...) in this source")
    try:
        f = _Finder(tree, source)
    except VariantError as e:  # a non-ASCII source
        return TilingSpace(kernel, source, (), (), (f"{kernel}: {e}",))
    reasons: list[str] = []
    try:
        configs = autotune_configs(kernels[kernel])
    except VariantError as e:
        return TilingSpace(kernel, source, (), (), (f"{kernel}: {e}",))
    grids = [s.func.slice for s in sites]  # type: ignore[attr-defined]
    grid_nodes = [n for g in grids for n in f.grid_nodes(g)]
    grid_strings = {n.value for n in grid_nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    grid_names = {ast.unparse(n) for n in grid_nodes if _is_name(n)}
    grid_ints = {n.value for n in grid_nodes if isinstance(n, ast.Constant) and type(n.value) is int}

    runs: list[_Run] = []
    if configs is not None:
        for i, call in enumerate(configs, 1):
            meta = config_meta(call)
            if meta is None:
                return TilingSpace(kernel, source, (), (), (f"{kernel}: config {i} has no literal dict",))
            found: dict[str, tuple[Slot, str | None] | str] = {}
            for k, v in zip(meta.keys, meta.values, strict=True):
                if (
                    isinstance(k, ast.Constant)
                    and isinstance(k.value, str)
                    and block_allowed(k.value, blocks)
                ):
                    lit = f.literal_or_named(v)
                    found[k.value] = lit if not isinstance(lit, str) else f"{k.value} in config {i}: {lit}"
            runs.append(_Run(f"config {i}", found, _config_warps(f, call)))
    else:
        for site in sites:
            found = {}
            for kw in site.keywords:
                if kw.arg and block_allowed(kw.arg, blocks):
                    lit = f.literal_or_named(kw.value, runtime=True)
                    if (
                        not isinstance(lit, str)
                        and lit[1] is None
                        and not isinstance(lit[0], ScaledSlot)
                        and lit[0].value in grid_ints
                    ):
                        lit = (
                            f"the grid repeats the literal {lit[0].value}, so a change would not reach it "
                            f"(bind it to one name: {kw.arg.upper()} = {lit[0].value})"
                        )
                    found[kw.arg] = (
                        lit if not isinstance(lit, str) else f"{kw.arg} at line {site.lineno}: {lit}"
                    )
            runs.append(_Run(f"the launch at line {site.lineno}", found, _launch_warps(f, site)))

    axes: list[Axis] = []
    names = list(dict.fromkeys(n for r in runs for n in r.blocks))
    where: dict[tuple[int, int], tuple[int, int]] = {}  # slot span -> (axis, slot index)
    for name in names:
        entries = [r.blocks.get(name, f"{name} is not set in {r.where}") for r in runs]
        bad = [e for e in entries if isinstance(e, str)]
        if bad:
            reasons.append(f"{kernel}: {bad[0]}")
            continue
        slots = list(dict.fromkeys(e[0] for e in entries))  # type: ignore[index]
        bound = {e[1] for e in entries if e[1]}  # type: ignore[index]
        feeds = name in grid_strings or bool(bound & grid_names)
        runtime = [isinstance(sl, ScaledSlot) for sl in slots]
        if any(runtime) and not all(runtime):
            reasons.append(f"{kernel}: {name} is computed at run time in one launch and not in another")
            continue
        allowed = RUNTIME_ALLOWED if any(runtime) else block_allowed(name, blocks) or ()
        axis = Axis(BLOCK, name, tuple(slots), allowed, feeds)
        if axis.shifts() == [0]:
            reasons.append(f"{kernel}: no power-of-two multiple of {name}={_values(axis.base)} is allowed")
            continue
        for j, s in enumerate(slots):
            where[(s.start, s.end)] = (len(axes), j)
        axes.append(axis)

    if multipliers:
        seen: set[tuple[int, int]] = set()
        for g in grids:
            for node in f.multipliers(g):
                found_m = f.named_literal(node)
                if isinstance(found_m, str):
                    reasons.append(f"{kernel}: grid multiplier {found_m}")
                    continue
                slot, name = found_m
                if (slot.start, slot.end) in seen | set(where) or block_allowed(name.split(".")[-1], blocks):
                    continue
                seen.add((slot.start, slot.end))
                axis = Axis(MULTIPLIER, name, (slot,), multipliers)
                if axis.shifts() == [0]:
                    reasons.append(f"{kernel}: no power-of-two multiple of {name}={slot.value} is allowed")
                    continue
                axes.append(axis)

    if not axes:
        if not names:
            reasons.append(f"{kernel}: no BLOCK size is set in its configs or launch keywords")
        return TilingSpace(kernel, source, (), (), tuple(reasons))
    links: list[tuple[int, ...] | None] = []
    warp_slots: list[Slot] = []
    if warps:
        for r in runs:
            if r.warps is None or r.warps in warp_slots:
                continue
            spans = [(e[0].start, e[0].end) for e in r.blocks.values() if not isinstance(e, str)]
            mine = sorted({where[s][0] for s in spans if s in where})
            tile = [a for a in mine if axes[a].feeds_grid] or mine
            warp_slots.append(r.warps)
            links.append(tuple(tile) if len(spans) == len(r.blocks) and len(mine) == len(r.blocks) else None)
        axis = Axis(WARPS, "num_warps", tuple(warp_slots), warps)
        if warp_slots and axis.shifts() != [0]:
            axes.append(axis)
        else:
            links = []
    return TilingSpace(kernel, source, tuple(axes), tuple(links), tuple(reasons))


def _nearest(value: float, allowed: tuple[int, ...]) -> int:
    """The allowed value closest to `value` on a log scale (so out-of-range values clamp to the ends)."""
    return min(allowed, key=lambda a: (abs(math.log2(a / value)), a))


def _values(values: tuple[int, ...]) -> str:
    return "/".join(map(str, values))


def _config_warps(f: _Finder, call: ast.Call) -> Slot | None:
    node = next((k.value for k in call.keywords if k.arg == "num_warps"), None)
    if node is None and len(call.args) > 1:
        node = call.args[1]
    if node is None:
        return f.insertion(call, "num_warps")
    found = f.literal_or_named(node)
    return None if isinstance(found, str) else found[0]


def _launch_warps(f: _Finder, call: ast.Call) -> Slot | None:
    node = next((k.value for k in call.keywords if k.arg == "num_warps"), None)
    if node is None:
        return f.insertion(call, "num_warps")
    found = f.literal_or_named(node)
    return None if isinstance(found, str) else found[0]
