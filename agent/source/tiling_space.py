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

The space itself, its axes and points: agent/source/tiling_points.py.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from agent.source.config_builders import written_out
from agent.source.kernel_facts import config_meta
from agent.source.tiling_literals import (
    RUNTIME_ALLOWED,
    LiteralFinder,
    ScaledSlot,
    Slot,
    is_name,
)
from agent.source.tiling_points import BLOCK, MULTIPLIER, WARPS, Axis, TilingSpace
from agent.source.variants import (
    VariantError,
    autotune_configs,
    find_kernels,
    launch_sites,
    parse_source,
)


class UnknownKernel(VariantError):
    """The kernel is not defined, or not launched, in this source (a library's kernel, say)."""


def block_allowed(name: str, blocks: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """The allowed values of the stage's BLOCK parameter pattern that `name` matches (`BLOCK_*` also
    covers a bare `BLOCK`); case-insensitive, as the rules treat any case of BLOCK as a BLOCK size."""
    for pattern, allowed in blocks.items():
        p, n = pattern.upper(), name.upper()
        if fnmatchcase(n, p) or (p.endswith("_*") and n == p[:-2]):
            return allowed
    return None


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
        f = LiteralFinder(tree, source)
        configs = autotune_configs(kernels[kernel])
    except VariantError as e:  # a non-ASCII source, or autotune configs it cannot read
        return TilingSpace(kernel, source, (), (), (f"{kernel}: {e}",))
    grid = _Grid.of(f, sites)
    runs = _config_runs(f, configs, blocks) if configs is not None else _launch_runs(f, sites, blocks, grid)
    if isinstance(runs, str):
        return TilingSpace(kernel, source, (), (), (f"{kernel}: {runs}",))
    reasons: list[str] = []
    axes, where, names = _block_axes(kernel, runs, blocks, grid, reasons)
    if multipliers:
        axes += _multiplier_axes(kernel, f, grid, multipliers, blocks, set(where), reasons)
    if not axes:
        if not names:
            reasons.append(f"{kernel}: no BLOCK size is set in its configs or launch keywords")
        return TilingSpace(kernel, source, (), (), tuple(reasons))
    links: list[tuple[int, ...] | None] = []
    if warps:
        warps_axis, links = _warps_axis(runs, axes, where, warps)
        if warps_axis is not None:
            axes.append(warps_axis)
    return TilingSpace(kernel, source, tuple(axes), tuple(links), tuple(reasons))


@dataclass
class _Grid:
    """The launch grids of a kernel and what they mention: a BLOCK size that appears there sets the
    number of programs."""

    exprs: list[ast.expr]
    strings: set[str]  # META["BLOCK_SIZE"]-style keys
    names: set[str]  # names and attributes
    ints: set[int]  # integer literals

    @classmethod
    def of(cls, f: LiteralFinder, sites: list[ast.Call]) -> _Grid:
        exprs = [s.func.slice for s in sites]  # type: ignore[attr-defined]
        nodes = [n for g in exprs for n in f.grid_nodes(g)]
        return cls(
            exprs,
            {n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)},
            {ast.unparse(n) for n in nodes if is_name(n)},
            {n.value for n in nodes if isinstance(n, ast.Constant) and type(n.value) is int},
        )


def _config_runs(
    f: LiteralFinder, configs: list[ast.Call], blocks: dict[str, tuple[int, ...]]
) -> list[_Run] | str:
    """One run per autotune config: its BLOCK entries and num_warps; a string: why there is no space."""
    runs = []
    for i, call in enumerate(configs, 1):
        meta = config_meta(call)
        if meta is None:
            return f"config {i} has no literal dict"
        found: dict[str, tuple[Slot, str | None] | str] = {}
        for k, v in zip(meta.keys, meta.values, strict=True):
            if isinstance(k, ast.Constant) and isinstance(k.value, str) and block_allowed(k.value, blocks):
                lit = f.literal_or_named(v)
                found[k.value] = lit if not isinstance(lit, str) else f"{k.value} in config {i}: {lit}"
        runs.append(_Run(f"config {i}", found, _config_warps(f, call)))
    return runs


def _launch_runs(
    f: LiteralFinder, sites: list[ast.Call], blocks: dict[str, tuple[int, ...]], grid: _Grid
) -> list[_Run]:
    """One run per launch site (a kernel without autotune): its BLOCK keywords and num_warps."""
    runs = []
    for site in sites:
        found: dict[str, tuple[Slot, str | None] | str] = {}
        for kw in site.keywords:
            if kw.arg and block_allowed(kw.arg, blocks):
                lit = f.literal_or_named(kw.value, runtime=True)
                if (
                    not isinstance(lit, str)
                    and lit[1] is None
                    and not isinstance(lit[0], ScaledSlot)
                    and lit[0].value in grid.ints
                ):
                    lit = (
                        f"the grid repeats the literal {lit[0].value}, so a change would not reach it "
                        f"(bind it to one name: {kw.arg.upper()} = {lit[0].value})"
                    )
                found[kw.arg] = lit if not isinstance(lit, str) else f"{kw.arg} at line {site.lineno}: {lit}"
        runs.append(_Run(f"the launch at line {site.lineno}", found, _launch_warps(f, site)))
    return runs


def _block_axes(
    kernel: str, runs: list[_Run], blocks: dict[str, tuple[int, ...]], grid: _Grid, reasons: list[str]
) -> tuple[list[Axis], dict[tuple[int, int], tuple[int, int]], list[str]]:
    """One axis per BLOCK name every run sets; (axes, slot span -> (axis, slot index), the names seen).
    Why a name is no axis goes to `reasons`."""
    axes: list[Axis] = []
    names = list(dict.fromkeys(n for r in runs for n in r.blocks))
    where: dict[tuple[int, int], tuple[int, int]] = {}
    for name in names:
        entries = [r.blocks.get(name, f"{name} is not set in {r.where}") for r in runs]
        bad = [e for e in entries if isinstance(e, str)]
        if bad:
            reasons.append(f"{kernel}: {bad[0]}")
            continue
        slots = list(dict.fromkeys(e[0] for e in entries))  # type: ignore[index]
        bound = {e[1] for e in entries if e[1]}  # type: ignore[index]
        feeds = name in grid.strings or bool(bound & grid.names)
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
    return axes, where, names


def _multiplier_axes(
    kernel: str,
    f: LiteralFinder,
    grid: _Grid,
    multipliers: tuple[int, ...],
    blocks: dict[str, tuple[int, ...]],
    taken: set[tuple[int, int]],
    reasons: list[str],
) -> list[Axis]:
    """One axis per grid multiplier (programs per SM) that is no BLOCK slot (`taken`: their spans)."""
    axes: list[Axis] = []
    seen: set[tuple[int, int]] = set()
    for g in grid.exprs:
        for node in f.multipliers(g):
            found = f.named_literal(node)
            if isinstance(found, str):
                reasons.append(f"{kernel}: grid multiplier {found}")
                continue
            slot, name = found
            if (slot.start, slot.end) in seen | taken or block_allowed(name.split(".")[-1], blocks):
                continue
            seen.add((slot.start, slot.end))
            axis = Axis(MULTIPLIER, name, (slot,), multipliers)
            if axis.shifts() == [0]:
                reasons.append(f"{kernel}: no power-of-two multiple of {name}={slot.value} is allowed")
                continue
            axes.append(axis)
    return axes


def _warps_axis(
    runs: list[_Run], axes: list[Axis], where: dict[tuple[int, int], tuple[int, int]], warps: tuple[int, ...]
) -> tuple[Axis | None, list[tuple[int, ...] | None]]:
    """The num_warps axis (None: nothing to vary) and, per warps slot, the BLOCK axes of its run that
    set the tile (None: the run's BLOCK sizes are not all axes)."""
    links: list[tuple[int, ...] | None] = []
    warp_slots: list[Slot] = []
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
        return axis, links
    return None, []


def _values(values: tuple[int, ...]) -> str:
    return "/".join(map(str, values))


def _config_warps(f: LiteralFinder, call: ast.Call) -> Slot | None:
    node = next((k.value for k in call.keywords if k.arg == "num_warps"), None)
    if node is None and len(call.args) > 1:
        node = call.args[1]
    if node is None:
        return f.insertion(call, "num_warps")
    found = f.literal_or_named(node)
    return None if isinstance(found, str) else found[0]


def _launch_warps(f: LiteralFinder, call: ast.Call) -> Slot | None:
    node = next((k.value for k in call.keywords if k.arg == "num_warps"), None)
    if node is None:
        return f.insertion(call, "num_warps")
    found = f.literal_or_named(node)
    return None if isinstance(found, str) else found[0]
