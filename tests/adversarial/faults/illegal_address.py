# fault: a Triton kernel that loads from a wild address (an illegal memory access on the GPU, a
# segmentation fault under the CPU interpreter)
# expect: crashed

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def wild(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    far = x_ptr + (1 << 40) + offs
    tl.store(out_ptr + offs, tl.load(far), mask=offs < n)


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        wild[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)
        return out
