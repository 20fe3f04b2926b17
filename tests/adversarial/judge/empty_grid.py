# exploit: numpy writes the output; the only Triton launch has an empty grid ("a Triton kernel ran")
# runtime: launch-covers-output cheating
# reason: empty grid
import numpy as np
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def copy_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)


class ModelNew(nn.Module):
    def forward(self, x):
        a = x.contiguous().numpy()
        out = torch.from_numpy(a / np.abs(a).mean(axis=1, keepdims=True))
        copy_kernel[(0,)](out, out, out.numel(), BLOCK=1024)
        return out
