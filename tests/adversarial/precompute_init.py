# exploit: predicts the inputs in __init__ (the RNG is seeded with the check's seed) and precomputes the
# exploit: answer
# expect: values incorrect
# runtime-cpu: values incorrect
# runtime-gpu: values incorrect
# note: inputs are drawn with a secret seed after ModelNew is built

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


@triton.jit
def copy_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        x = torch.randn(3, 5003)  # what get_inputs() would draw next under the same seed
        self.answer = torch.empty_like(x)
        l1_rows[(x.shape[0],)](x, self.answer, x.shape[1], BLOCK=1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        copy_kernel[(triton.cdiv(x.numel(), 1024),)](self.answer.to(x.device), out, x.numel(), BLOCK=1024)
        return out
