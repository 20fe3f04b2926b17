"""vector add behind the device checks libraries make: the CUDA capability in a try, an XPU/NPU query, an
importlib version check; a persistent grid of SM-count programs from the driver."""

import importlib.util

import torch
import torch.nn as nn
import triton
import triton.language as tl


def infer_device():
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch, "xpu", None) is not None and torch.xpu.is_available():
        return "xpu"
    if importlib.util.find_spec("torch_npu") is not None:
        return "npu"
    return "cpu"


try:
    CAPABILITY = torch.cuda.get_device_capability()
except (AssertionError, RuntimeError):
    CAPABILITY = (0, 0)

NUM_SMS = triton.runtime.driver.active.utils.get_device_properties(0)["multiprocessor_count"]


@triton.jit
def add_persistent(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    for start in tl.range(pid * BLOCK, n, tl.num_programs(0) * BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.device = infer_device()

    def forward(self, x, y):
        out = torch.empty_like(x)
        n = out.numel()
        BLOCK = 512
        programs = min(triton.cdiv(n, BLOCK), NUM_SMS * 2)
        add_persistent[(programs,)](x, y, out, n, BLOCK=BLOCK)
        return out
