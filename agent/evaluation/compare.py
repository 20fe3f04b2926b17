"""Comparing a candidate's outputs with the reference's, and the anti-cheat checks on them.

Tolerances, per dtype of the reference output; a problem's `atol`/`rtol` (problem.toml
`[tolerance]`) win over these. An element passes when |out - ref| <= atol + rtol * |ref|.

| dtype                    | atol = rtol | why                                                          |
| ------------------------ | ----------- | ------------------------------------------------------------ |
| float64, complex128      | 1e-7        | fp64 kernels should agree to ~1e-12; leaves room for reorder  |
| float32, complex64       | 1e-4        | KernelBench's fp32 value; an fp32 op computed in fp16 fails    |
|                          |             | (fp16 rounding alone is ~5e-4 relative)                      |
| float16                  | 1e-2        | KernelBench                                                  |
| bfloat16                 | 2e-2        | 8 mantissa bits: one rounding is up to 4e-3, sums add more   |
| float8 (e4m3, e5m2, ...) | 1.25e-1     | 3 or 2 mantissa bits                                         |
| integers, bool           | exact       |                                                              |

The checks (each a `models.Check`, by name):
- `output-count`: as many output tensors as the reference returns.
- `type`: each output is exactly a `torch.Tensor` (a subclass could compute lazily at comparison).
- `shape`, `dtype`, `device`: as the reference's.
- `values`: allclose on the elements where both are finite; reports max abs error, max relative
  error (over elements with |ref| > atol) and the worst element (largest excess over the tolerance).
- `nan-inf`: NaN/Inf only where the reference has the same (a NaN where the reference is finite is
  `written`'s case).
- `written`: no NaN where the reference is finite. Candidate calls run with PyTorch's
  `fill_uninitialized_memory`, so an output element the kernel never wrote reads back as NaN.
- `deterministic`: the two candidate calls agree bitwise, or (detail says which) within tolerance.
- `input-mutation`: the inputs are bitwise unchanged after a candidate call.
- `output-aliases-input`: no output shares storage bytes with an input (returning the input, or a
  view of it, passes the values check of identity-like problems).
- `tamper`: functions and torch flags the evaluation relies on (every torch.Tensor attribute, the
  callables of torch and torch.nn.functional, the harness's own functions, the Triton launch hooks,
  allow_tf32, poisoning...) are the same objects and values after the candidate ran as before it was
  imported (`TamperWatch`; in one-process evaluations also the reference module).
- `degenerate-reference`: always passes; its detail warns when the reference output is near zero or
  near constant (max |ref| < 1e-2 or std < 1e-3), where allclose proves little.

The checks beyond the values live in agent/evaluation/tensor_checks.py (`deterministic`, `input-mutation`,
`output-aliases-input`, `degenerate-reference`) and agent/evaluation/tamper.py (`tamper`).

The run-time guards (`agent.evaluation.guards`), the extra draws (`agent.evaluation.judge.Judge`) and the
static
rules (`agent.source.anticheat`) add their own checks; docs/anticheat.md lists them all.

Large tensors are compared in flat chunks, upcast one chunk at a time, so an 8 GB output never needs a
16 GB temporary. On the GPU, fp16/bf16/fp32 chunks are compared by one Triton kernel that reads each
element once (agent/evaluation/compare_kernel.py), checked against the PyTorch path on its first use per
process.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from agent.records import Check

CHUNK_ELEMENTS = 1 << 24

_EXACT = 0.0
_TOLERANCES: dict[torch.dtype, float] = {
    torch.float64: 1e-7,
    torch.complex128: 1e-7,
    torch.float32: 1e-4,
    torch.complex64: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 2e-2,
}
_FLOAT8_TOL = 1.25e-1

WARNING = "warning: "


def tolerance(
    dtype: torch.dtype, atol: float | None = None, rtol: float | None = None
) -> tuple[float, float]:
    """(atol, rtol) for outputs of `dtype`; overrides given by the problem win."""
    if dtype in _TOLERANCES:
        default = _TOLERANCES[dtype]
    elif dtype.is_floating_point:
        default = _FLOAT8_TOL if dtype.itemsize == 1 else 1e-2
    else:
        default = _EXACT
    return (default if atol is None else atol, default if rtol is None else rtol)


@dataclass
class Comparison:
    """The checks of one candidate call's outputs against the reference's."""

    checks: list[Check] = field(default_factory=list)
    max_abs_err: float | None = None
    max_rel_err: float | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def _flat(t: torch.Tensor) -> torch.Tensor:
    if t.is_complex():
        t = torch.view_as_real(t.resolve_conj())
    return t.reshape(-1)  # a view when contiguous; a copy otherwise


def _chunks(a: torch.Tensor, b: torch.Tensor, size: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    fa, fb = _flat(a), _flat(b)
    for start in range(0, fa.numel(), size):
        yield start, fa[start : start + size], fb[start : start + size]


def _index(flat: int, shape: Sequence[int], complex_: bool) -> str:
    dims = [*shape, 2] if complex_ else list(shape)
    idx = []
    for d in reversed(dims):
        idx.append(flat % d if d else 0)
        flat //= d if d else 1
    return "(" + ", ".join(str(i) for i in reversed(idx)) + ")"


@dataclass
class _Stats:
    count: int = 0
    bad_values: int = 0
    unwritten: int = 0
    nonfinite_mismatch: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst_excess: float = -math.inf
    worst_at: int = -1
    worst_got: float = 0.0
    worst_want: float = 0.0
    first_unwritten: int = -1
    first_nonfinite: int = -1

    def add(self, start: int, summary: Sequence[float]) -> bool:
        """Fold in one chunk's summary (`_chunk_summary`'s eight numbers; the chunk starts at flat index
        `start`); returns whether the chunk holds non-finite elements (their details need the chunk)."""
        nonfinite, bad, max_abs, max_rel, worst, at, got, want = summary
        self.bad_values += int(bad)
        self.max_abs = max(self.max_abs, max_abs)
        self.max_rel = max(self.max_rel, max_rel)
        if worst > self.worst_excess:
            self.worst_excess, self.worst_at, self.worst_got, self.worst_want = (
                worst,
                start + int(at),
                got,
                want,
            )
        return bool(nonfinite)


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """fp16/bf16/fp32 outputs are compared in fp32 (the rounding of |a - b| there, ~6e-8 relative, is far
    below any tolerance used for them); everything else in fp64."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float64


def _chunk_summary(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> torch.Tensor:
    """[non-finite elements in either, elements outside tolerance, max abs err, max rel err, worst excess,
    where it is, the output and the reference there] of one chunk, as a float64 tensor on the chunk's
    device: no synchronisation."""
    dtype = _compute_dtype(b)
    a, b = a.to(dtype), b.to(dtype)
    both = torch.isfinite(a) & torch.isfinite(b)
    nonfinite = (~both).sum()
    diff = torch.where(both, (a - b).abs(), 0.0)
    b_abs = b.abs()
    excess = torch.where(both, diff - (atol + rtol * b_abs), -math.inf)
    bad = (excess > 0).sum()
    rel = torch.where(both & (b_abs > atol), diff / b_abs, 0.0)
    worst, at = excess.max(0)
    parts = (nonfinite, bad, diff.max(), rel.max(), worst, at, a[at], b[at])
    return torch.stack([x.to(torch.float64) for x in parts])


# Whether this process compares fp16/bf16/fp32 CUDA chunks with the fused kernel
# (agent/evaluation/compare_kernel.py):
# None until its first use, which is checked against the PyTorch path.
_FUSED: dict[str, bool | None] = {"ok": None}


def _agree(fused: list[float], plain: list[float]) -> bool:
    """The counts equal, the maxima equal to fp32 rounding (the worst element's place may differ on ties)."""
    if fused[:2] != plain[:2]:
        return False
    return all(
        x == y or math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-30)
        for x, y in zip(fused[2:5], plain[2:5], strict=True)
    )


def _fusable(a: torch.Tensor, b: torch.Tensor) -> bool:
    if not a.is_cuda:  # no Triton import on the CPU path
        return False
    from agent.evaluation import compare_kernel

    return compare_kernel.fusable(a, b)


def _summary(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> torch.Tensor:
    """One chunk's summary: the fused kernel's for CUDA fp16/bf16/fp32 chunks, else `_chunk_summary`."""
    if _FUSED["ok"] is False or not _fusable(a, b):
        return _chunk_summary(a, b, atol, rtol)
    from agent.evaluation import compare_kernel

    fused = compare_kernel.chunk_summary(a, b, atol, rtol)
    if _FUSED["ok"] is None:  # first use in this process: the PyTorch path must say the same
        plain = _chunk_summary(a, b, atol, rtol)
        _FUSED["ok"] = _agree(fused.tolist(), plain.tolist())
        if not _FUSED["ok"]:
            print(
                f"warning: the fused comparison disagreed with PyTorch ({fused.tolist()} vs "
                f"{plain.tolist()}); comparing with PyTorch from now on",
                file=sys.stderr,
            )
            return plain
    return fused


def _nonfinite_details(s: _Stats, start: int, a: torch.Tensor, b: torch.Tensor) -> None:
    """Unwritten (NaN where the reference is finite) and NaN/Inf mismatches of a chunk that has some."""
    a, b = a.double(), b.double()
    fin_a, fin_b = torch.isfinite(a), torch.isfinite(b)
    unwritten = torch.isnan(a) & fin_b
    n = int(unwritten.sum())
    if n:
        s.unwritten += n
        if s.first_unwritten < 0:
            s.first_unwritten = start + int(unwritten.nonzero()[0, 0])
    # Non-finite elements must match exactly (NaN where NaN, +Inf where +Inf).
    same_nonfinite = (torch.isnan(a) & torch.isnan(b)) | (torch.isinf(a) & (a == b))
    mismatch = ~(fin_a & fin_b) & ~same_nonfinite & ~unwritten
    n = int(mismatch.sum())
    if n:
        s.nonfinite_mismatch += n
        if s.first_nonfinite < 0:
            s.first_nonfinite = start + int(mismatch.nonzero()[0, 0])


def _whole(out: torch.Tensor, ref: torch.Tensor, atol: float, rtol: float) -> _Stats | None:
    """The fused kernel's summary of the whole tensors in one launch and one read-back, once it has agreed
    with PyTorch in this process; None where it does not apply, or where non-finite elements need the
    chunked details."""
    if _FUSED["ok"] is not True:
        return None
    a, b = _flat(out), _flat(ref)
    if not b.numel() or not _fusable(a, b):
        return None
    from agent.evaluation import compare_kernel

    s = _Stats(count=b.numel())
    return None if s.add(0, compare_kernel.chunk_summary(a, b, atol, rtol).tolist()) else s


def _compare_float(out: torch.Tensor, ref: torch.Tensor, atol: float, rtol: float, chunk: int) -> _Stats:
    """The whole tensors at once where the fused kernel may (`_whole`); else one pass over the chunks with
    no synchronisation (a summary per chunk, read back at once), then the details only where they are
    needed: chunks holding non-finite elements, and the worst element."""
    whole = _whole(out, ref, atol, rtol)
    if whole is not None:
        return whole
    s = _Stats()
    summaries, starts = [], []
    for start, a, b in _chunks(out, ref, chunk):
        s.count += a.numel()
        if a.numel():
            summaries.append(_summary(a, b, atol, rtol))
            starts.append(start)
    if not summaries:
        return s
    table = torch.stack(summaries).tolist()
    wanted = {start for start, row in zip(starts, table, strict=True) if s.add(start, row)}
    if wanted:
        for start, a, b in _chunks(out, ref, chunk):
            if start in wanted:
                _nonfinite_details(s, start, a, b)
    return s


def _compare_exact(out: torch.Tensor, ref: torch.Tensor, chunk: int) -> _Stats:
    s = _Stats()
    for start, a, b in _chunks(out, ref, chunk):
        s.count += a.numel()
        ne = a != b
        n = int(ne.sum())
        if n:
            if s.bad_values == 0:
                i = int(ne.nonzero()[0, 0])
                s.worst_at, s.worst_got, s.worst_want = start + i, float(a[i]), float(b[i])
            s.bad_values += n
    return s


def compare_outputs(
    outs: Sequence[Any],
    refs: Sequence[Any],
    atol: float | None = None,
    rtol: float | None = None,
    chunk: int = CHUNK_ELEMENTS,
) -> Comparison:
    """Checks output-count, type, shape, dtype, device, nan-inf, written and values."""
    r = Comparison()
    ok = len(outs) == len(refs)
    r.checks.append(
        Check(name="output-count", passed=ok, detail=f"{len(outs)} output tensors, reference {len(refs)}")
    )
    if not ok:
        return r
    for i, (o, ref) in enumerate(zip(outs, refs, strict=True)):
        tag = f"output {i}: " if len(refs) > 1 else ""
        bad_type = type(o) is not type(ref)
        r.checks.append(Check(name="type", passed=not bad_type, detail=f"{tag}{type(o).__qualname__}"))
        if bad_type:
            continue
        for name, got, want in (
            ("shape", tuple(o.shape), tuple(ref.shape)),
            ("dtype", o.dtype, ref.dtype),
            ("device", o.device.type, ref.device.type),
        ):
            r.checks.append(Check(name=name, passed=got == want, detail=f"{tag}{got}, reference {want}"))
        if not all(c.passed for c in r.checks[-3:]):
            continue
        r.checks.extend(_value_checks(o, ref, tag, atol, rtol, chunk, r))
    return r


def _value_checks(
    o: torch.Tensor,
    ref: torch.Tensor,
    tag: str,
    atol: float | None,
    rtol: float | None,
    chunk: int,
    r: Comparison,
) -> list[Check]:
    at, rt = tolerance(ref.dtype, atol, rtol)
    floating = ref.is_floating_point() or ref.is_complex()
    s = _compare_float(o, ref, at, rt, chunk) if floating else _compare_exact(o, ref, chunk)
    where = lambda i: _index(i, ref.shape, ref.is_complex())  # noqa: E731
    checks = []
    if floating:
        r.max_abs_err = max(r.max_abs_err or 0.0, s.max_abs)
        r.max_rel_err = max(r.max_rel_err or 0.0, s.max_rel)
        checks.append(
            Check(
                name="nan-inf",
                passed=s.nonfinite_mismatch == 0,
                detail=f"{tag}{s.nonfinite_mismatch} NaN/Inf mismatches with the reference"
                + (f", first at {where(s.first_nonfinite)}" if s.nonfinite_mismatch else ""),
            )
        )
        checks.append(
            Check(
                name="written",
                passed=s.unwritten == 0,
                detail=f"{tag}{s.unwritten} of {s.count} elements are NaN where the reference is finite"
                + (
                    f" (first at {where(s.first_unwritten)}): unwritten outputs read back as the NaN poison"
                    if s.unwritten
                    else ""
                ),
            )
        )
    tol = f"atol={at:g}, rtol={rt:g}" if floating else "exact"
    detail = f"{tag}{s.bad_values} of {s.count} elements outside tolerance ({tol})"
    if floating:
        detail += f"; max abs err {s.max_abs:.3g}, max rel err {s.max_rel:.3g}"
    if s.worst_at >= 0 and (s.bad_values or floating):
        detail += f"; worst at {where(s.worst_at)}: got {s.worst_got:.7g}, expected {s.worst_want:.7g}"
    checks.append(Check(name="values", passed=s.bad_values == 0, detail=detail))
    return checks
