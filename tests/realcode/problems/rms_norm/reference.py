import torch
import torch.nn as nn


class Model(nn.Module):
    """RMSNorm over the last dimension with a learned weight (Llama's), eps 1e-6."""

    def __init__(self, hidden: int):
        super().__init__()
        self.eps = 1e-6
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


batch_size = 8192
hidden = 4096


def get_inputs():
    return [torch.randn(batch_size, hidden)]


def get_init_inputs():
    return [hidden]
