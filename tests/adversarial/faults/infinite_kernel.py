# fault: a Triton kernel that never ends (it waits for a flag nobody sets)
# expect: timeout

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def spin(flag_ptr, out_ptr):
    flag = tl.load(flag_ptr, volatile=True)
    while flag == 0:
        flag = tl.load(flag_ptr, volatile=True)
    tl.store(out_ptr, flag.to(tl.float32))


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flag = torch.zeros(1, dtype=torch.int32, device=x.device)
        out = torch.empty_like(x)
        spin[(1,)](flag, out)
        return out
