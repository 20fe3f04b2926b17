import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _conv1d_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    C_in,
    L,
    C_out,
    L_out,
    cin_g,
    cout_g,
    n_oc_tiles,
    n_l_tiles,
    groups,
    stride,
    padding,
    dilation,
    KS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_OC: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_IC: tl.constexpr,
):
    # Implicit GEMM: a [BLOCK_OC, BLOCK_L] tile of one batch element and one group,
    # sum over input channels (BLOCK_IC at a time) and kernel taps of W[oc, ic, k] @ X[ic, l*s - p + k*d].
    pid = tl.program_id(0)
    lt = pid % n_l_tiles
    rest = pid // n_l_tiles
    ot = rest % n_oc_tiles
    rest = rest // n_oc_tiles
    g = rest % groups
    b = rest // groups

    oc_local = ot * BLOCK_OC + tl.arange(0, BLOCK_OC)
    oc_mask = oc_local < cout_g
    oc = g * cout_g + oc_local
    lo = lt * BLOCK_L + tl.arange(0, BLOCK_L)
    lo_mask = lo < L_out
    ics = tl.arange(0, BLOCK_IC)

    x_base = x_ptr + (b.to(tl.int64) * C_in + g * cin_g) * L
    w_rows = oc.to(tl.int64) * (cin_g * KS)
    acc = tl.zeros([BLOCK_OC, BLOCK_L], dtype=tl.float32)
    for ic0 in range(0, cin_g, BLOCK_IC):
        ic = ic0 + ics
        ic_mask = ic < cin_g
        for k in tl.static_range(KS):
            w = tl.load(
                w_ptr + w_rows[:, None] + (ic * KS + k)[None, :],
                mask=oc_mask[:, None] & ic_mask[None, :],
                other=0.0,
            ).to(tl.float32)
            pos = lo * stride - padding + k * dilation
            pmask = lo_mask & (pos >= 0) & (pos < L)
            xv = tl.load(
                x_base + (ic.to(tl.int64) * L)[:, None] + pos[None, :],
                mask=ic_mask[:, None] & pmask[None, :],
                other=0.0,
            ).to(tl.float32)
            acc = tl.dot(w, xv, acc, input_precision="ieee")
    if HAS_BIAS:
        bias = tl.load(b_ptr + oc, mask=oc_mask, other=0.0).to(tl.float32)
        acc += bias[:, None]
    out_offs = (b.to(tl.int64) * C_out + oc)[:, None] * L_out + lo[None, :]
    tl.store(out_ptr + out_offs, acc, mask=oc_mask[:, None] & lo_mask[None, :])


class ModelNew(nn.Module):
    """nn.Conv1d forward (zero padding, any stride/padding/dilation/groups, optional bias) as a Triton
    implicit GEMM in exact fp32; the nn.Conv1d only holds the weight and bias."""

    BLOCK_OC = 128
    BLOCK_L = 256
    BLOCK_IC = 16
    WARPS = 8

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
    ):
        super().__init__()
        self.conv1d = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv1d
        x = x.contiguous()
        w = conv.weight.detach().contiguous()
        C_out, cin_g, KS = w.shape[0], w.shape[1], w.shape[2]
        groups = conv.groups
        cout_g = C_out // groups
        stride = conv.stride[0]
        dilation = conv.dilation[0]
        squeeze = x.dim() == 2  # unbatched (C, L) input
        if squeeze:
            x = x.unsqueeze(0)
        B, C_in, L = x.shape[0], x.shape[1], x.shape[2]
        if isinstance(conv.padding, str):
            if conv.padding == "same":
                total = dilation * (KS - 1)
                pad_l, pad_r = total // 2, total - total // 2
            else:  # "valid"
                pad_l, pad_r = 0, 0
        else:
            pad_l = pad_r = conv.padding[0]
        L_out = (L + pad_l + pad_r - dilation * (KS - 1) - 1) // stride + 1
        out = torch.empty((B, C_out, max(L_out, 0)), dtype=x.dtype, device=x.device)
        if out.numel() > 0:
            has_bias = conv.bias is not None
            b_arg = conv.bias.detach().contiguous() if has_bias else w
            block_oc = min(self.BLOCK_OC, max(16, triton.next_power_of_2(cout_g)))
            block_l = self.BLOCK_L if block_oc >= 64 else 2 * self.BLOCK_L
            block_ic = min(self.BLOCK_IC, max(16, triton.next_power_of_2(cin_g)))
            n_oc = triton.cdiv(cout_g, block_oc)
            n_l = triton.cdiv(L_out, block_l)
            grid = (B * groups * n_oc * n_l,)
            _conv1d_kernel[grid](
                x,
                w,
                b_arg,
                out,
                C_in,
                L,
                C_out,
                L_out,
                cin_g,
                cout_g,
                n_oc,
                n_l,
                groups,
                stride,
                pad_l,
                dilation,
                KS=KS,
                HAS_BIAS=has_bias,
                BLOCK_OC=block_oc,
                BLOCK_L=block_l,
                BLOCK_IC=block_ic,
                num_warps=self.WARPS,
            )
        if squeeze:
            out = out.squeeze(0)
        return out
