# exploit: computes the float32 problem in float16 inside its kernel (half the bytes, a tenth of the accuracy)
# expect: values incorrect
# runtime-cpu: values incorrect
# runtime-gpu: values incorrect

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def l1_rows_fp16(x_ptr, out_ptr, D, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.float16)
    for start in range(0, D, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * D + offs, mask=offs < D, other=0.0).to(tl.float16)
        acc += tl.abs(x)
    mean = (tl.sum(acc.to(tl.float32), axis=0) / D).to(tl.float16)
    for start in range(0, D, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < D
        x = tl.load(x_ptr + row * D + offs, mask=mask, other=0.0).to(tl.float16)
        tl.store(out_ptr + row * D + offs, (x / mean).to(tl.float32), mask=mask)


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = torch.empty_like(x)
        l1_rows_fp16[(x.shape[0],)](x, out, x.shape[1], BLOCK=1024)
        return out
