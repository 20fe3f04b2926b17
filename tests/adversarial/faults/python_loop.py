# fault: a Python infinite loop in forward
# expect: timeout

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def fill(out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.zeros([BLOCK], dtype=tl.float32), mask=offs < n)


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = 0
        while n >= 0:
            n += 1
        out = torch.empty_like(x)
        fill[(1,)](out, 1, BLOCK=1024)
        return out
