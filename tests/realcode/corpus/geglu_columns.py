"""geglu tiled over rows and column blocks (a 2-D grid), tanh written out from libdevice exp2, device
queries through getattr(torch, device.type)."""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.language.extra import libdevice


def device_backend(device):
    return getattr(torch, torch.device(device).type, None)


@triton.jit
def tanh_exp2(x):
    e = libdevice.exp2(-2.8853900817779268 * tl.abs(x))  # exp(-2|x|)
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def geglu_tile(a_ptr, b_ptr, c_ptr, stride, n_cols, BLOCK_N: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = cols < n_cols
    a = tl.load(a_ptr + row * stride + cols, mask=mask, other=0.0)
    b = tl.load(b_ptr + row * stride + cols, mask=mask, other=0.0)
    g = 0.5 * a * (1.0 + tanh_exp2(0.7978845608028654 * (a + 0.044715 * a * a * a)))
    tl.store(c_ptr + row * stride + cols, g * b, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a, b):
        backend = device_backend(a.device)
        assert backend is not None, f"no torch backend for {a.device}"
        a, b = a.contiguous(), b.contiguous()
        c = torch.empty_like(a)
        n_rows, n_cols = a.shape
        BLOCK_N = 256
        geglu_tile[(n_rows, triton.cdiv(n_cols, BLOCK_N))](a, b, c, a.stride(0), n_cols, BLOCK_N=BLOCK_N)
        return c
