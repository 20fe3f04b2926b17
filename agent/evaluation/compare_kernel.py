"""The output comparison of one chunk in one pass over memory: a Triton kernel for CUDA tensors.

`verify._chunk_summary` computes, with a dozen PyTorch element-wise ops and reductions, each reading and
writing chunk-sized temporaries, the summary of one chunk: [non-finite elements in either, elements
outside tolerance, max abs err, max rel err, worst excess, where it is, the output and the reference
there]. On an 8.6 GB output that is ~30 passes over memory (~0.12 s a comparison on an H200, ten of them
per evaluation). `chunk_summary` computes the same numbers reading each element of both tensors once:
each program reduces BLOCK elements to one row of partials, and PyTorch reduces the few thousand rows.

The arithmetic is the PyTorch path's, in fp32 (only fp16, bf16 and fp32 outputs come here; fp64,
complex128 and float8 stay on the PyTorch path), except that the compiler may contract
`atol + rtol * |ref|` into one fused multiply-add: an element within one rounding of the tolerance's
edge may be counted differently. The first comparison of each process is also made the PyTorch way and
the two must agree (`verify._compare_float`); if they do not, the process uses the PyTorch path from then
on and says so on stderr.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 2048
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_PARTIALS = 5  # non-finite count, bad count, max abs err, max rel err, worst excess


@triton.jit
def _summary_kernel(a_ptr, b_ptr, n, atol, rtol, part_ptr, at_ptr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    a = tl.load(a_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    finite = (a == a) & (b == b) & (tl.abs(a) < float("inf")) & (tl.abs(b) < float("inf"))
    both = finite & inside
    nonfinite = tl.sum((inside & ~finite).to(tl.float32), axis=0)
    diff = tl.where(both, tl.abs(a - b), 0.0)
    b_abs = tl.abs(b)
    excess = tl.where(both, diff - (atol + rtol * b_abs), float("-inf"))
    bad = tl.sum((excess > 0).to(tl.float32), axis=0)
    rel = tl.where(both & (b_abs > atol), diff / tl.where(b_abs > atol, b_abs, 1.0), 0.0)
    worst, at = tl.max(excess, axis=0, return_indices=True, return_indices_tie_break_left=True)
    row = part_ptr + pid * 5
    tl.store(row, nonfinite)
    tl.store(row + 1, bad)
    tl.store(row + 2, tl.max(diff, axis=0))
    tl.store(row + 3, tl.max(rel, axis=0))
    tl.store(row + 4, worst)
    tl.store(at_ptr + pid, pid * BLOCK + at)


def fusable(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether `chunk_summary` handles this pair: flat, contiguous, same dtype, fp16/bf16/fp32, CUDA."""
    return (
        a.is_cuda
        and b.is_cuda
        and a.dtype == b.dtype
        and b.dtype in FUSED_DTYPES
        and a.dim() == 1
        and a.is_contiguous()
        and b.is_contiguous()
    )


def chunk_summary(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> torch.Tensor:
    """`verify._chunk_summary`'s eight numbers for flat, contiguous `a` (output) and `b` (reference), as a
    float64 tensor on their device; no synchronisation. Element counts are exact below 2^24 per program
    and chunk (fp32 partial counts, summed in float64)."""
    n = b.numel()
    programs = triton.cdiv(n, BLOCK)
    parts = torch.empty((programs, _PARTIALS), dtype=torch.float32, device=b.device)
    ats = torch.empty(programs, dtype=torch.int64, device=b.device)
    _summary_kernel[(programs,)](a, b, n, atol, rtol, parts, ats, BLOCK=BLOCK)
    parts64 = parts.to(torch.float64)
    worst, which = parts64[:, 4].max(0)
    at = ats[which]
    return torch.stack(
        [
            parts64[:, 0].sum(),
            parts64[:, 1].sum(),
            parts64[:, 2].max(),
            parts64[:, 3].max(),
            worst,
            at.to(torch.float64),
            a[at].to(torch.float64),
            b[at].to(torch.float64),
        ]
    )
