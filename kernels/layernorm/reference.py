import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    """nn.LayerNorm(normalized_shape) with elementwise affine, eps 1e-5.

    The weight and bias start away from ones and zeros (drawn from the seeded generator) so that a
    kernel which ignores them is caught.
    """

    def __init__(self, normalized_shape: tuple[int, ...]):
        super().__init__()
        self.normalized_shape = tuple(normalized_shape)
        self.eps = 1e-5
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(self.normalized_shape))
        self.bias = nn.Parameter(0.1 * torch.randn(self.normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


batch_size = 16384
dim = 8192


def get_inputs():
    x = torch.randn(batch_size, dim)
    return [x]


def get_init_inputs():
    return [(dim,)]
