"""rms_norm, Liger's style: a libdevice import guard, a settings helper, an autograd.Function, eps.to()."""

import functools
import operator

import torch
import torch.nn as nn
import triton
import triton.language as tl

try:
    from triton.language.extra.libdevice import rsqrt
except ModuleNotFoundError:
    from triton.language.extra.cuda.libdevice import rsqrt


def calculate_settings(n):
    BLOCK_SIZE = triton.next_power_of_2(n)
    if BLOCK_SIZE > 65536:
        raise RuntimeError(f"n = {n} is too wide for one block")
    num_warps = 4
    if BLOCK_SIZE >= 8192:
        num_warps = 16
    elif BLOCK_SIZE >= 2048:
        num_warps = 8
    return BLOCK_SIZE, num_warps


@triton.jit
def _rms_norm_forward_kernel(
    Y_ptr, Y_row_stride, X_ptr, X_row_stride, W_ptr, RSTD_ptr, n_cols, eps, BLOCK_SIZE: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols
    x = tl.load(X_ptr + row * X_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W_ptr + cols, mask=mask, other=0.0)
    mean_square = tl.sum(x * x, axis=0) / n_cols
    rstd = rsqrt(mean_square + eps.to(tl.float32))
    tl.store(RSTD_ptr + row, rstd)
    tl.store(Y_ptr + row * Y_row_stride + cols, x * rstd * w, mask=mask)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        shape = x.shape
        n_cols = shape[-1]
        x2 = x.reshape(-1, n_cols)
        n_rows = functools.reduce(operator.mul, shape[:-1], 1)
        BLOCK_SIZE, num_warps = calculate_settings(n_cols)
        y = torch.empty_like(x2)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        _rms_norm_forward_kernel[(n_rows,)](
            y, y.stride(0), x2, x2.stride(0), weight, rstd, n_cols, eps,
            BLOCK_SIZE=BLOCK_SIZE, num_warps=num_warps,
        )
        ctx.save_for_backward(x2, weight, rstd)
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):
        raise NotImplementedError("forward only")


class ModelNew(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.eps = 1e-6
        self.weight = nn.Parameter(torch.ones(hidden))

    def forward(self, x):
        return RMSNormFunction.apply(x, self.weight, self.eps)
