"""Honest: the kernel wrapped in a torch.autograd.Function (backward never called in forward)."""

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


class L1Norm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.contiguous()
        out = torch.empty_like(x)
        l1_rows[(x.shape[0],)](x, out, x.shape[1], BLOCK=_settings(x.shape[1])["block"])
        ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("forward only")


_SETTINGS = {"block": 1024}


def _settings(n):
    return _SETTINGS


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return L1Norm.apply(x)
