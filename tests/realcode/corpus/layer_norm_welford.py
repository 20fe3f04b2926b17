"""layer_norm in one pass (Welford's running mean and variance over column blocks), libdevice rsqrt, a
version check before using a newer API and config builders for its autotune."""

import importlib.metadata

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

TRITON_VERSION = tuple(int(p) for p in importlib.metadata.version("triton").split(".")[:2])
HAS_TL_RANGE = TRITON_VERSION >= (3, 0)


def layer_norm_configs():
    return [triton.Config({"BLOCK": b}, num_warps=w) for b, w in ((256, 2), (512, 4), (1024, 4), (2048, 8))]


@triton.autotune(configs=layer_norm_configs(), key=["N"])
@triton.jit
def welford_layer_norm(X, Y, W, B, stride, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    X += row * stride
    Y += row * stride
    mean = tl.zeros([BLOCK], dtype=tl.float32)
    m2 = tl.zeros([BLOCK], dtype=tl.float32)
    count = tl.zeros([BLOCK], dtype=tl.float32)
    for off in tl.range(0, N, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < N
        x = tl.load(X + cols, mask=mask, other=0.0)
        new_count = count + tl.where(mask, 1.0, 0.0)
        delta = tl.where(mask, x - mean, 0.0)
        mean += tl.where(mask, delta / tl.maximum(new_count, 1.0), 0.0)
        m2 += delta * tl.where(mask, x - mean, 0.0)
        count = new_count
    total = tl.sum(count, axis=0)
    row_mean = tl.sum(mean * count, axis=0) / total
    row_m2 = tl.sum(m2 + count * (mean - row_mean) * (mean - row_mean), axis=0)
    rstd = libdevice.rsqrt(row_m2 / total + eps)
    for off in tl.range(0, N, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < N
        x = tl.load(X + cols, mask=mask, other=0.0)
        w = tl.load(W + cols, mask=mask)
        b = tl.load(B + cols, mask=mask)
        tl.store(Y + cols, (x - row_mean) * rstd * w + b, mask=mask)


class ModelNew(nn.Module):
    def __init__(self, normalized_shape):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(tuple(normalized_shape)))
        self.bias = nn.Parameter(torch.zeros(tuple(normalized_shape)))
        self.eps = 1e-5

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        M, N = x.shape
        welford_layer_norm[(M,)](x, y, self.weight, self.bias, x.stride(0), N, self.eps)
        return y
