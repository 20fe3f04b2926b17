import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    """gelu(x * scale + bias) with GELU's tanh approximation; bias is broadcast over the rows."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.gelu(x * self.scale + bias, approximate="tanh")


batch_size = 16384
dim = 16384
scale = 1.5


def get_inputs():
    x = torch.randn(batch_size, dim)
    bias = torch.randn(dim)
    return [x, bias]


def get_init_inputs():
    return [scale]
