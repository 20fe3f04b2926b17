import torch
import torch.nn as nn


class Model(nn.Module):
    """Level-2 style fusion: a GEMM with parameters, a scaling and a residual add."""

    def __init__(self, in_features: int, out_features: int, scale: float):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y * self.scale + y


batch_size = 16
in_features = 48
out_features = 40
scale = 0.5


def get_inputs():
    return [torch.randn(batch_size, in_features)]


def get_init_inputs():
    return [in_features, out_features, scale]
