import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.autotune(
    configs=[
        triton.Config({"BLOCK_SIZE": 1024}, num_warps=16, num_stages=2),
        triton.Config({"BLOCK_SIZE": 2048}, num_warps=16, num_stages=2),
        triton.Config({"BLOCK_SIZE": 4096}, num_warps=16, num_stages=2),
        triton.Config({"BLOCK_SIZE": 8192}, num_warps=16, num_stages=1),
    ],
    key=["n_cols"],
)
@triton.jit
def layernorm_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    stride_x_row,
    stride_out_row,
    n_cols,
    eps,
    BLOCK_SIZE: tl.constexpr,
):
    """One program per row: mean, then variance around the mean (two passes, as stable as
    PyTorch's), then (x - mean) * rstd * w + b."""
    row = tl.program_id(axis=0)
    x_row = x_ptr + row * stride_x_row
    out_row = out_ptr + row * stride_out_row

    acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_SIZE):
        cols = start + tl.arange(0, BLOCK_SIZE)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        acc += x
    mean = tl.sum(acc, axis=0) / n_cols

    acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_SIZE):
        cols = start + tl.arange(0, BLOCK_SIZE)
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - mean, 0.0)
        acc += d * d
    var = tl.sum(acc, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)

    for start in range(0, n_cols, BLOCK_SIZE):
        cols = start + tl.arange(0, BLOCK_SIZE)
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        b = tl.load(b_ptr + cols, mask=mask, other=0.0)
        y = (x - mean) * rstd * w + b
        tl.store(out_row + cols, y, mask=mask)


def triton_layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Layer norm of x over its trailing weight.ndim dimensions."""
    n_cols = weight.numel()
    x2 = x.reshape(-1, n_cols).contiguous()
    out = torch.empty_like(x2)
    grid = (x2.shape[0],)
    layernorm_kernel[grid](
        x2, weight.contiguous(), bias.contiguous(), out,
        x2.stride(0), out.stride(0),
        n_cols, eps,
    )
    return out.reshape(x.shape)


class ModelNew(nn.Module):
    """Layer norm with a Triton kernel; same parameters, in the same order, as the reference."""

    def __init__(self, normalized_shape: tuple[int, ...]):
        super().__init__()
        self.normalized_shape = tuple(normalized_shape)
        self.eps = 1e-5
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(self.normalized_shape))
        self.bias = nn.Parameter(0.1 * torch.randn(self.normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return triton_layernorm(x, self.weight, self.bias, self.eps)
