import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _l1norm_small(x_ptr, out_ptr, n_cols, stride_x, stride_o, BLOCK: tl.constexpr):
    # One program per row; the whole row fits one block: one read, one write.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(tl.abs(x), axis=0) / n_cols
    tl.store(out_ptr + row * stride_o + cols, (x / mean).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _l1norm_long(x_ptr, out_ptr, n_cols, stride_x, stride_o, BLOCK: tl.constexpr):
    # One program per row of any length: pass 1 sums |x| in per-lane fp32 accumulators, pass 2
    # re-reads the row (last chunk first, the most likely still in L2) and writes x / mean|x|.
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    o_row = out_ptr + row * stride_o
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + offs
        x = tl.load(x_row + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        acc += tl.abs(x)
    mean = tl.sum(acc, axis=0) / n_cols
    inv = 1.0 / mean
    n_blocks = tl.cdiv(n_cols, BLOCK)
    for i in range(0, n_blocks):
        cols = (n_blocks - 1 - i) * BLOCK + offs
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(o_row + cols, (x * inv).to(out_ptr.dtype.element_ty), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() >= 2
        if x.dim() != 2:
            # Reduce over dim 1: move it last, normalise rows, move it back.
            xt = x.movedim(1, -1).contiguous()
            return self.forward(xt.reshape(-1, xt.shape[-1])).view(xt.shape).movedim(-1, 1)
        if x.stride(1) != 1:
            x = x.contiguous()
        n_rows, n_cols = x.shape
        out = torch.empty((n_rows, n_cols), device=x.device, dtype=x.dtype)
        if n_rows == 0 or n_cols == 0:
            return out
        if n_cols <= 8192:
            BLOCK = max(16, triton.next_power_of_2(n_cols))
            warps = 4 if BLOCK <= 2048 else 8
            _l1norm_small[(n_rows,)](x, out, n_cols, x.stride(0), out.stride(0), BLOCK=BLOCK, num_warps=warps)
        else:
            _l1norm_long[(n_rows,)](x, out, n_cols, x.stride(0), out.stride(0), BLOCK=4096, num_warps=8)
        return out
