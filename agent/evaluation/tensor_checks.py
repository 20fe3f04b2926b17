"""The checks on a call's tensors beyond their values (agent/evaluation/compare.py lists them all): the
two candidate calls agree (`deterministic`), the inputs stay bitwise unchanged (`input-mutation`), no output
shares storage with an input (`output-aliases-input`), and the reference output is not near zero or near
constant (`degenerate-reference`, a warning only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from agent.evaluation.compare import CHUNK_ELEMENTS, WARNING, _flat, compare_outputs
from agent.records import Check


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def bitwise_equal(a: torch.Tensor, b: torch.Tensor, chunk: int = CHUNK_ELEMENTS * 4) -> bool:
    """Same shape, dtype and bytes (NaN payloads and signed zeros included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.numel() == 0:
        return True
    ba, bb = _bytes(a), _bytes(b)
    return all(torch.equal(ba[i : i + chunk], bb[i : i + chunk]) for i in range(0, ba.numel(), chunk))


def check_deterministic(
    first: Sequence[torch.Tensor],
    second: Sequence[torch.Tensor],
    atol: float | None = None,
    rtol: float | None = None,
) -> Check:
    """The two candidate calls on identical inputs: bitwise equal, else at least within tolerance."""
    if len(first) == len(second) and all(bitwise_equal(a, b) for a, b in zip(first, second, strict=True)):
        return Check(name="deterministic", passed=True, detail="the two candidate calls agree bitwise")
    cmp = compare_outputs(second, first, atol, rtol)
    if cmp.passed:
        return Check(
            name="deterministic",
            passed=True,
            detail=f"the two candidate calls differ (max abs diff {cmp.max_abs_err or 0:.3g}) but within "
            "tolerance, not bitwise (atomics or split reductions?)",
        )
    failed = next(c for c in cmp.checks if not c.passed)
    return Check(
        name="deterministic",
        passed=False,
        detail=f"two calls on identical inputs disagree: {failed.name}: {failed.detail}",
    )


def tensors(values: Sequence[Any]) -> list[torch.Tensor]:
    return [v for v in values if isinstance(v, torch.Tensor)]


def clone_inputs(inputs: Sequence[Any]) -> list[Any]:
    return [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]


def changed_inputs(inputs: Sequence[Any], pristine: Sequence[Any]) -> list[int]:
    """Positions of tensor inputs whose shape, dtype or bytes differ from their pristine copies."""
    return [
        i
        for i, (x, p) in enumerate(zip(inputs, pristine, strict=True))
        if isinstance(x, torch.Tensor) and not bitwise_equal(x, p)
    ]


def restore_inputs(inputs: Sequence[Any], pristine: Sequence[Any], which: Sequence[int]) -> None:
    for i in which:
        x, p = inputs[i], pristine[i]
        if x.shape != p.shape:
            x.resize_(p.shape)
        x.copy_(p)


def check_input_mutation(changed: Sequence[int]) -> Check:
    if changed:
        return Check(
            name="input-mutation",
            passed=False,
            detail=f"input(s) {', '.join(map(str, changed))} changed by the candidate "
            "(inputs must stay bitwise unchanged)",
        )
    return Check(name="input-mutation", passed=True, detail="inputs bitwise unchanged")


def _span(t: torch.Tensor) -> tuple[int, int] | None:
    if t.numel() == 0 or t.device.type == "meta":
        return None
    storage = t.untyped_storage()
    start = storage.data_ptr()
    return (start, start + storage.nbytes()) if storage.nbytes() else None


def aliased(outs: Sequence[torch.Tensor], inputs: Sequence[Any]) -> list[tuple[int, int]]:
    """(output, input) pairs whose storages overlap."""
    pairs = []
    for i, o in enumerate(outs):
        so = _span(o)
        for j, x in enumerate(inputs):
            sx = _span(x) if isinstance(x, torch.Tensor) else None
            if so and sx and so[0] < sx[1] and sx[0] < so[1] and o.device == x.device:
                pairs.append((i, j))
    return pairs


def check_aliasing(outs: Sequence[torch.Tensor], inputs: Sequence[Any]) -> Check:
    return aliasing_check(aliased(outs, inputs))


def check_reference_signal(refs: Sequence[torch.Tensor], chunk: int = CHUNK_ELEMENTS) -> Check:
    """A warning (never a failure) when the reference output is near zero or near constant."""
    parts = []  # per chunk, on the device: [finite elements, sum, sum of squares, max |x|]
    for t in refs:
        if t.numel() == 0:
            continue
        flat = _flat(t)
        for start in range(0, flat.numel(), chunk):
            c = flat[start : start + chunk].double()
            fin = torch.isfinite(c)
            c = torch.where(fin, c, 0.0)
            parts.append(torch.stack([fin.sum().double(), c.sum(), (c * c).sum(), c.abs().max()]))
    rows = torch.stack(parts).tolist() if parts else []
    n = int(sum(r[0] for r in rows))
    total, sq = sum(r[1] for r in rows), sum(r[2] for r in rows)
    peak = max((r[3] for r in rows), default=0.0)
    if n == 0:
        return Check(
            name="degenerate-reference", passed=True, detail=WARNING + "the reference has no finite output"
        )
    mean = total / n
    std = math.sqrt(max(sq / n - mean * mean, 0.0))
    stats = f"max |ref| = {peak:.3g}, std = {std:.3g}"
    if peak < 1e-2 or std < 1e-3:
        return Check(
            name="degenerate-reference",
            passed=True,
            detail=f"{WARNING}reference output is near zero or near constant ({stats}): "
            "matching it proves little",
        )
    return Check(name="degenerate-reference", passed=True, detail=stats)


def aliasing_check(pairs: Sequence[tuple[int, int]]) -> Check:
    """`check_aliasing` from (output, input) pairs found where the tensors live."""
    if pairs:
        text = ", ".join(f"output {i} with input {j}" for i, j in pairs)
        return Check(
            name="output-aliases-input",
            passed=False,
            detail=f"output storage overlaps input storage: {text} (return new tensors)",
        )
    return Check(name="output-aliases-input", passed=True, detail="outputs do not share storage with inputs")
