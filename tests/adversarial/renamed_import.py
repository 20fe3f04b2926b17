# exploit: hides torch.mean and torch.abs behind renamed imports and a module-level alias
# expect: torch-compute cheating
# runtime-cpu: torch-compute cheating
# runtime-gpu: torch-compute cheating

import torch
import torch.nn as nn
import triton
import triton.language as tl
from torch import abs as magnitude
from torch import mean as average


@triton.jit
def copy_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)


reduce_rows = average


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scratch = torch.empty_like(x)
        copy_kernel[(triton.cdiv(x.numel(), 1024),)](x.contiguous(), scratch, x.numel(), BLOCK=1024)
        return x / reduce_rows(magnitude(x), dim=1, keepdim=True)
