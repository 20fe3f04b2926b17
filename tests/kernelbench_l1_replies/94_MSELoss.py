import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _sq_diff_partial_kernel(p_ptr, t_ptr, partial_ptr, n, n_blocks, n_progs, BLOCK: tl.constexpr):
    # Program `pid` handles blocks pid, pid + n_progs, ... and writes one fp32 partial sum of (p - t)^2,
    # accumulated per lane and reduced as a tree at the end.
    pid = tl.program_id(0)
    lanes = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    n_iter = tl.cdiv(n_blocks - pid, n_progs)
    for it in range(0, n_iter):
        blk = pid + it * n_progs
        offs = blk.to(tl.int64) * BLOCK + lanes
        mask = offs < n
        p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        d = p - t
        acc += d * d
    tl.store(partial_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _mean_of_partials_kernel(partial_ptr, out_ptr, n_partials, n_total, BLOCK_P: tl.constexpr):
    offs = tl.arange(0, BLOCK_P)
    v = tl.load(partial_ptr + offs, mask=offs < n_partials, other=0.0)
    tl.store(out_ptr, tl.sum(v, axis=0) / n_total)


class ModelNew(nn.Module):
    """mean((predictions - targets) ** 2) as a 0-dim tensor: per-program partial sums, then one
    program adds them and divides by the element count."""

    MAX_PROGS = 1024  # partial sums, all added by the second kernel in one block

    def __init__(self):
        super().__init__()

    def forward(self, predictions, targets):
        p = predictions.contiguous()
        t = targets.contiguous()
        n = p.numel()
        out = torch.empty((), dtype=p.dtype, device=p.device)
        block = 4096
        n_blocks = triton.cdiv(n, block)
        n_progs = max(1, min(n_blocks, self.MAX_PROGS))
        partial = torch.empty(n_progs, dtype=torch.float32, device=p.device)
        _sq_diff_partial_kernel[(n_progs,)](p, t, partial, n, n_blocks, n_progs, BLOCK=block, num_warps=8)
        _mean_of_partials_kernel[(1,)](partial, out, n_progs, float(n), BLOCK_P=self.MAX_PROGS, num_warps=4)
        return out
