import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _sumsq_partial_kernel(x_ptr, part_ptr, n, iters, BLOCK: tl.constexpr):
    # Grid-stride pass: program p sums x^2 over blocks p, p + P, p + 2P, ... in per-lane fp32
    # accumulators and writes one partial sum.
    pid = tl.program_id(0).to(tl.int64)
    nprog = tl.num_programs(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(0, iters):
        o = (pid + i * nprog) * BLOCK + offs
        x = tl.load(x_ptr + o, mask=o < n, other=0.0).to(tl.float32)
        acc += x * x
    tl.store(part_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _finalize_kernel(part_ptr, norm_ptr, n_parts, BLOCK_P: tl.constexpr):
    offs = tl.arange(0, BLOCK_P)
    p = tl.load(part_ptr + offs, mask=offs < n_parts, other=0.0)
    tl.store(norm_ptr, tl.sqrt_rn(tl.sum(p, axis=0)))


@triton.jit
def _scale_kernel(x_ptr, out_ptr, norm_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    norm = tl.load(norm_ptr)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (x / norm).to(out_ptr.dtype.element_ty), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = torch.empty_like(x)
        n = x.numel()
        BLOCK = 4096
        n_blocks = triton.cdiv(n, BLOCK)
        n_parts = max(1, min(n_blocks, 2048))
        iters = triton.cdiv(n_blocks, n_parts)
        parts = torch.empty((n_parts,), device=x.device, dtype=torch.float32)
        norm = torch.empty((1,), device=x.device, dtype=torch.float32)
        _sumsq_partial_kernel[(n_parts,)](x, parts, n, iters, BLOCK=BLOCK, num_warps=8)
        _finalize_kernel[(1,)](
            parts, norm, n_parts, BLOCK_P=max(16, triton.next_power_of_2(n_parts)), num_warps=4
        )
        if n > 0:
            _scale_kernel[(triton.cdiv(n, BLOCK),)](x, out, norm, n, BLOCK=BLOCK, num_warps=8)
        return out
