"""Honest: version and capability checks through importlib, as real libraries write them."""

import importlib
import importlib.metadata
import importlib.util

import torch
import torch.nn as nn
import triton
import triton.language as tl

TRITON_VERSION = tuple(int(p) for p in importlib.metadata.version("triton").split(".")[:2])
HAS_LIBDEVICE = importlib.util.find_spec("triton.language.extra") is not None
_lang = importlib.import_module("triton.language")


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


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = torch.empty_like(x)
        l1_rows[(x.shape[0],)](x, out, x.shape[1], BLOCK=1024)
        return out
