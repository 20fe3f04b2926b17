"""rms_norm with driver queries and heuristics: as many programs as the GPU's SMs hold, each looping over
rows; @triton.heuristics says whether the row needs a mask."""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.language.extra import libdevice

PROPS = triton.runtime.driver.active.utils.get_device_properties(
    triton.runtime.driver.active.get_current_device()
)
NUM_SM = PROPS["multiprocessor_count"]


@triton.heuristics({"EVEN_N": lambda args: args["n_cols"] == args["BLOCK_N"]})
@triton.jit
def rms_norm_rows(x_ptr, w_ptr, y_ptr, n_rows, n_cols, stride, eps, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr):
    start = tl.program_id(0)
    step = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    if EVEN_N:
        w = tl.load(w_ptr + cols)
    else:
        w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0)
    for row in tl.range(start, n_rows, step):
        if EVEN_N:
            x = tl.load(x_ptr + row * stride + cols)
        else:
            x = tl.load(x_ptr + row * stride + cols, mask=cols < n_cols, other=0.0)
        r = libdevice.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
        tl.store(y_ptr + row * stride + cols, x * r * w, mask=cols < n_cols)


class ModelNew(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.eps = 1e-6
        self.weight = nn.Parameter(torch.ones(hidden))

    def forward(self, x):
        x = x.contiguous()
        n_rows, n_cols = x.shape
        y = torch.empty_like(x)
        programs = min(n_rows, NUM_SM * 4)
        rms_norm_rows[(programs,)](
            x, self.weight, y, n_rows, n_cols, x.stride(0), self.eps, BLOCK_N=triton.next_power_of_2(n_cols)
        )
        return y
