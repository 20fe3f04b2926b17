# fault: asks for far more memory than the machine has (4 TiB), in forward
# expect: crashed

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
        huge = torch.empty(1 << 40, dtype=torch.float32, device=x.device)
        fill[(1,)](huge, 1024, BLOCK=1024)
        return huge[: x.numel()].view(x.shape)
