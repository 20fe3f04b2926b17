"""Honest: device queries (getattr(torch, device.type), torch.xpu, torch.device/Size construction)."""

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


_BLOCKS = {4096: 512}


def _block(n):
    return _BLOCKS.get(n, 1024)


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        backend = getattr(torch, x.device.type, None)
        on_xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
        _npu = getattr(torch, "npu", None)
        device = torch.device(x.device.type)
        shape = torch.Size([x.shape[0], x.shape[1]])
        out = torch.empty(shape, dtype=x.dtype, device=device)
        if backend is not None and x.device.type == "cuda" and not on_xpu:
            backend.synchronize()
        l1_rows[(x.shape[0],)](x, out, x.shape[1], BLOCK=_block(x.shape[1]))
        return out
