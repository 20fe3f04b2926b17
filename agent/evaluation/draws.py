"""Which shapes the judge draws beyond the small ones, and what the work measured across them says.

- **Real sizes, one dimension at a time**: for each shape global whose real value (the reference's own)
  differs from its small one, a draw with that one at its real value and the others small: work capped at
  a fixed width (the first 8192 columns, one 2048-wide block) is right on the small shapes only.
- **Both sides of each threshold in the source**: every integer a comparison in the candidate's host code
  names (`K >= 1024`, `x.shape[1] > 8192`) that lies between a dimension's small and real values gives a
  draw just above it (the small shape is below): a branch on the input size meets both arms.
- Every draw is bounded: its inputs scale the small ones' bytes and the time of a small call by the
  elements' ratio, and draws that would pass `MAX_BYTES` or the evaluation's time budget are skipped,
  with a warning that says so.
- **Work that grows with the input** (`scaling_check`): the candidate's ATen ops and its thread's CPU time
  outside Triton launches, at the small shape and at the larger draws. Honest host code does a fixed
  amount of work per call (a Python loop over chunks adds an op per chunk); a loop over `float(v)` adds
  ops per element, and numpy over the tensors' memory adds host time per element.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass

from agent.records import Check

MAX_BYTES = 4 << 30  # inputs of one draw
# All larger draws of one evaluation together, estimated. Every candidate pays it, so on the CPU it sets the
# pace of a whole run: 45 s made a 13-candidate CPU run of l1_norm take ~14 minutes against ~3 before the
# draws. 12 s still reaches the largest size of each dimension that fits; NCU_AGENT_DRAW_BUDGET_S raises it
# for a slower, deeper check (docs/anticheat.md); read at each evaluation, so a test or a run can set it.
DRAW_BUDGET_S = 12.0


def draw_budget_s() -> float:
    """The larger draws' budget for one evaluation: NCU_AGENT_DRAW_BUDGET_S, or DRAW_BUDGET_S."""
    try:
        return float(os.environ.get("NCU_AGENT_DRAW_BUDGET_S", DRAW_BUDGET_S))
    except ValueError:
        return DRAW_BUDGET_S


OPS_PER_ELEMENT = 1 / 64  # more new ops than one per 64 new elements is a per-element loop
HOST_MS_FLOOR = 5.0  # growth of host time below this is noise (a loaded 2-core machine)
HOST_RATIO = 3.0  # and growth below this many times the small calls' host time
FILL_NS_PER_BYTE = 1.0  # allowance for filling larger outputs with poison (~1 GB/s, generous)
TINY = 32  # the repeated calls' shape globals, at most


def tiny(small: dict[str, int | float]) -> dict[str, int | float] | None:
    """The small shapes with every dimension capped at TINY, or None when that changes nothing."""
    out = {k: min(v, TINY) if _dim(v) else v for k, v in small.items()}
    return out if out != small else None


@dataclass
class Sample:
    """The work of one candidate call."""

    where: str
    elements: int  # of the tensor inputs
    out_bytes: int
    host_ms: float
    ops: float


def thresholds(source: str) -> list[tuple[int, frozenset[str]]]:
    """Integers compared against in the candidate's host code (not inside `@triton.jit` functions), each
    with the names the comparison reads (`K >= 1024` -> (1024, {"K"}))."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    kernels: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any("jit" in ast.unparse(d) for d in node.decorator_list):
            kernels |= set(ast.walk(node))
    found: dict[int, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and node not in kernels:
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            for part in (node.left, *node.comparators):
                if isinstance(part, ast.Constant) and type(part.value) is int and part.value > 1:
                    found.setdefault(part.value, set()).update(names)
    return sorted((c, frozenset(names)) for c, names in found.items())


def plans(
    small: dict[str, int | float], real: dict[str, int | float], limits: list[tuple[int, frozenset[str]]]
) -> list[tuple[str, dict[str, int | float]]]:
    """(why, shape globals) for each larger draw: above each threshold first (on the dimension the
    comparison names, else on each), then each dimension at its real size; cheapest first in each group."""
    above: list[tuple[str, dict[str, int | float]]] = []
    at_real: list[tuple[str, dict[str, int | float]]] = []
    seen: set[tuple] = set()

    def add(group: list, why: str, shape: dict[str, int | float]) -> None:
        sig = tuple(sorted(shape.items()))
        if sig not in seen:
            seen.add(sig)
            group.append((why, shape))

    for key, value in small.items():
        top = real.get(key)
        if not _dim(value) or not _dim(top) or top <= value:
            continue
        for c, names in limits:
            named = {n.lower() for n in names} & {k.lower() for k in small}
            if value <= c < top and (not named or key.lower() in named):
                add(above, f"{key}={c + 1}, above the threshold {c} in the source", {**small, key: c + 1})
        add(at_real, f"{key} at its real size {top}", {**small, key: top})
    return sorted(above, key=lambda p: _ratio(small, p[1])) + sorted(
        at_real, key=lambda p: _ratio(small, p[1])
    )


def _dim(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _ratio(small: dict[str, int | float], shape: dict[str, int | float]) -> float:
    r = 1.0
    for k, v in small.items():
        if _dim(v) and _dim(shape.get(k)):
            r *= float(shape[k]) / float(v)
    return r


def affordable(
    small: dict[str, int | float], shape: dict[str, int | float], in_bytes: int, call_s: float, left_s: float
) -> str | None:
    """Why a draw is skipped (too many bytes or too slow, estimated), or None."""
    r = _ratio(small, shape)
    if in_bytes * r > MAX_BYTES:
        return f"its inputs would take ~{in_bytes * r / 2**30:.1f} GiB"
    if call_s * r * 2 > left_s:
        return f"two calls would take ~{call_s * r * 2:.0f} s (the draws' budget has {left_s:.0f} s left)"
    return None


def fitting(
    small: dict[str, int | float], shape: dict[str, int | float], call_s: float, left_s: float, why: str
) -> tuple[dict[str, int | float] | None, str]:
    """The one dimension `shape` raises, lowered to what two calls can afford (None below 2x small)."""
    (key,) = [k for k in small if shape[k] != small[k]]
    value = int(small[key])
    fit = int(value * left_s / (2 * call_s))
    if fit < 2 * value:
        return None, why
    return {**small, key: fit}, f"{key}={fit} ({why} does not fit the time budget)"


def scaling_check(samples: list[Sample]) -> Check:
    """Whether the candidate's ops or host time outside launches grow with the input."""
    if not samples:
        return Check(name="host-compute", passed=True, detail="warning: not checked: no calls measured")
    base_elements = min(s.elements for s in samples)
    base = [s for s in samples if s.elements == base_elements]
    ops0 = min(s.ops for s in base)
    host0 = min(s.host_ms for s in base)
    by_where: dict[str, list[Sample]] = {}
    for s in samples:
        if s.elements > base_elements:
            by_where.setdefault(s.where, []).append(s)
    for where, group in by_where.items():
        n = group[0].elements - base_elements
        ops = min(s.ops for s in group)
        host = min(s.host_ms for s in group)
        allowance = HOST_MS_FLOOR + max(
            HOST_RATIO * host0, FILL_NS_PER_BYTE * 1e-6 * max(s.out_bytes for s in group)
        )
        if ops - ops0 > max(64.0, n * OPS_PER_ELEMENT):
            return Check(
                name="host-compute",
                passed=False,
                detail=f"the candidate's torch ops outside Triton launches grew with the input: {ops0:.0f} "
                f"at {base_elements} input elements, {ops:.0f} at {group[0].elements} ({where}): work per "
                "element in Python",
            )
        if len(group) > 1 and host - host0 > allowance:  # the fastest of two calls: one pause is not growth
            return Check(
                name="host-compute",
                passed=False,
                detail=f"the candidate's CPU time outside Triton launches grew with the input: {host0:.2f} "
                f"ms at {base_elements} input elements, {host:.2f} ms at {group[0].elements} ({where}; "
                f"allowed growth {allowance:.2f} ms): work on the tensors' memory outside the kernels",
            )
    sizes = sorted({s.elements for s in samples})
    return Check(
        name="host-compute",
        passed=True,
        detail=f"ops and host time outside launches flat across {len(sizes)} input sizes "
        f"({sizes[0]}..{sizes[-1]} elements; {ops0:.0f} ops, {host0:.2f} ms at the smallest)"
        if len(sizes) > 1
        else "warning: not checked: only one input size was drawn",
    )
