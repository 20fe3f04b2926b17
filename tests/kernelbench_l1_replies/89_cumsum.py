import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _cumsum_last_kernel(x_ptr, out_ptr, n_rows, R, BLOCK_O: tl.constexpr, BLOCK_R: tl.constexpr):
    # (outer, R) rows, R contiguous: scan BLOCK_R elements at a time (tl.cumsum, a tree scan in fp32)
    # and add the running total of the blocks before.
    rows = tl.program_id(0).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    row_mask = rows < n_rows
    base = rows * R
    cols = tl.arange(0, BLOCK_R)
    is_last = cols == BLOCK_R - 1
    carry = tl.zeros([BLOCK_O], dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + cols
        mask = row_mask[:, None] & (r < R)[None, :]
        offs = base[:, None] + r[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        s = tl.cumsum(x, axis=1) + carry[:, None]
        tl.store(out_ptr + offs, s, mask=mask)
        # the block's last column holds the running total (masked elements loaded as 0)
        carry = tl.sum(tl.where(is_last[None, :], s, 0.0), axis=1)


@triton.jit
def _cumsum_mid_kernel(
    x_ptr, out_ptr, R, inner, n_inner_blocks, BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr
):
    # (outer, R, inner) with inner > 1: BLOCK_I contiguous inner columns of one outer index, scanned
    # along R (stride inner) BLOCK_R rows at a time with a carried per-column total.
    pid = tl.program_id(0)
    o = pid // n_inner_blocks
    ib = pid % n_inner_blocks
    i = ib * BLOCK_I + tl.arange(0, BLOCK_I)
    i_mask = i < inner
    base = o.to(tl.int64) * R * inner
    rs = tl.arange(0, BLOCK_R)
    is_last = rs == BLOCK_R - 1
    carry = tl.zeros([BLOCK_I], dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = (r0 + rs).to(tl.int64)
        mask = (r < R)[:, None] & i_mask[None, :]
        offs = base + r[:, None] * inner + i[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        s = tl.cumsum(x, axis=0) + carry[None, :]
        tl.store(out_ptr + offs, s, mask=mask)
        carry = tl.sum(tl.where(is_last[:, None], s, 0.0), axis=0)


class ModelNew(nn.Module):
    """torch.cumsum(x, dim) by Triton block scans with a carried prefix (fp32 accumulation)."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        x = x.contiguous()
        out = torch.empty_like(x)
        if x.numel() == 0:
            return out
        nd = x.dim()
        if nd == 0:
            x = x.reshape(1)
            out = out.reshape(1)
        shape = list(x.shape)
        d = self.dim % x.dim()
        outer = 1
        for s in shape[:d]:
            outer *= s
        R = shape[d]
        inner = 1
        for s in shape[d + 1 :]:
            inner *= s
        if inner == 1:
            block_r = min(2048, max(16, triton.next_power_of_2(R)))
            block_o = max(1, 2048 // block_r)
            grid = (triton.cdiv(outer, block_o),)
            _cumsum_last_kernel[grid](x, out, outer, R, BLOCK_O=block_o, BLOCK_R=block_r, num_warps=8)
        else:
            block_i = min(128, triton.next_power_of_2(inner))
            block_r = max(1, min(triton.next_power_of_2(R), 2048 // block_i))
            n_ib = triton.cdiv(inner, block_i)
            grid = (outer * n_ib,)
            _cumsum_mid_kernel[grid](x, out, R, inner, n_ib, BLOCK_R=block_r, BLOCK_I=block_i, num_warps=8)
        if nd == 0:
            out = out.reshape(())
        return out
