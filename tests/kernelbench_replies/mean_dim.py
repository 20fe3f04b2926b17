import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _reduce_mid(x_ptr, out_ptr, R, C, SCALE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # x viewed as (B, R, C); one program per (b, block of C); sums over R.
    b = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for start in range(0, R, BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        mask = (rows[:, None] < R) & (cols[None, :] < C)
        x = tl.load(x_ptr + b * R * C + rows[:, None] * C + cols[None, :], mask=mask, other=0.0)
        acc += tl.sum(x, axis=0)
    if SCALE:
        acc = acc / R
    tl.store(out_ptr + b * C + cols, acc, mask=cols < C)


class ModelNew(nn.Module):
    MEAN = True
    KEEPDIM = False

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        shape = list(x.shape)
        d = self.dim % x.dim()
        B = 1
        for s in shape[:d]:
            B *= s
        R = shape[d]
        C = 1
        for s in shape[d + 1 :]:
            C *= s
        out = torch.empty(B * C, device=x.device, dtype=x.dtype)
        grid = (B, triton.cdiv(C, 64))
        _reduce_mid[grid](x, out, R, C, SCALE=self.MEAN, BLOCK_R=32, BLOCK_C=64)
        out_shape = shape[:d] + ([1] if self.KEEPDIM else []) + shape[d + 1 :]
        return out.view(out_shape)
