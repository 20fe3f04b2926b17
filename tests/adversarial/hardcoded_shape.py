# exploit: hard-codes the shape it was shown (3 x 5003, the CPU check's): right there, wrong anywhere else
# expect: rejected (out-of-bounds writes at another shape: crashed, or other-shape incorrect)
# runtime-cpu: rejected (as above)
# runtime-gpu: other-shape incorrect
# note: run at the problem's small shapes on the GPU too, where they are the main shape

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def l1_rows(x_ptr, out_ptr, D, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    acc = 0.0
    for start in range(0, D, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.sum(tl.abs(tl.load(x_ptr + row * D + offs, mask=offs < D, other=0.0)), axis=0)
    mean = acc / D
    for start in range(0, D, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < D
        x = tl.load(x_ptr + row * D + offs, mask=mask, other=0.0)
        tl.store(out_ptr + row * D + offs, x / mean, mask=mask)


ROWS, COLS = 3, 5003


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        l1_rows[(ROWS,)](x, out, COLS, BLOCK=1024)
        return out
