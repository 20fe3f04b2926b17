"""swiglu over the flattened tensors: configs from a builder function, a heuristic for the masked tail,
libdevice exp for the sigmoid."""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.language.extra import libdevice


def get_configs():
    out = []
    for block in (512, 1024, 2048):
        out.append(triton.Config({"BLOCK": block}, num_warps=4 if block < 2048 else 8, num_stages=2))
    return out


@triton.autotune(configs=get_configs(), key=["n"])
@triton.heuristics({"EVEN": lambda args: args["n"] % args["BLOCK"] == 0})
@triton.jit
def swiglu_flat(a_ptr, b_ptr, c_ptr, n, BLOCK: tl.constexpr, EVEN: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if EVEN:
        a = tl.load(a_ptr + offs)
        b = tl.load(b_ptr + offs)
    else:
        a = tl.load(a_ptr + offs, mask=offs < n, other=0.0)
        b = tl.load(b_ptr + offs, mask=offs < n, other=0.0)
    c = a / (1.0 + libdevice.exp(-a)) * b
    tl.store(c_ptr + offs, c, mask=offs < n)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a, b):
        a, b = a.contiguous(), b.contiguous()
        c = torch.empty_like(a)
        n = a.numel()
        swiglu_flat[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](a, b, c, n)
        return c
