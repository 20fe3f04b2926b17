import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _conv_bias_relu(
    x_ptr, w_ptr, cb_ptr, b_ptr, out_ptr, C, H, W, CO, OH, OW, KS: tl.constexpr, BLOCK: tl.constexpr
):
    # One program per (image, output channel): a direct convolution over a block of output pixels,
    # then the conv's bias, the extra bias and ReLU.
    pid = tl.program_id(0)
    n = pid // CO
    co = pid % CO
    p = tl.arange(0, BLOCK)
    mask = p < OH * OW
    oh = p // OW
    ow = p % OW
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for ci in range(0, C):
        for kh in range(0, KS):
            for kw in range(0, KS):
                x = tl.load(x_ptr + ((n * C + ci) * H + oh + kh) * W + ow + kw, mask=mask, other=0.0)
                w = tl.load(w_ptr + ((co * C + ci) * KS + kh) * KS + kw)
                acc += x * w
    acc += tl.load(cb_ptr + co) + tl.load(b_ptr + co)
    tl.store(out_ptr + (n * CO + co) * OH * OW + p, tl.maximum(acc, 0.0), mask=mask)


class ModelNew(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.bias = nn.Parameter(torch.randn(out_channels, 1, 1) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        N, C, H, W = x.shape
        CO, KS = self.conv.weight.shape[0], self.conv.weight.shape[2]
        OH, OW = H - KS + 1, W - KS + 1
        out = torch.empty((N, CO, OH, OW), device=x.device, dtype=x.dtype)
        _conv_bias_relu[(N * CO,)](
            x,
            self.conv.weight,
            self.conv.bias,
            self.bias,
            out,
            C,
            H,
            W,
            CO,
            OH,
            OW,
            KS=KS,
            BLOCK=triton.next_power_of_2(OH * OW),
        )
        return out
