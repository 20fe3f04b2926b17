import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _rmsnorm_kernel(
    x_ptr, out_ptr, C, S, n_sblocks, eps, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, SINGLE: tl.constexpr
):
    # x viewed as [B, C, S] (contiguous). Each program owns one batch index and BLOCK_S spatial
    # positions, reduces x^2 over the C channels in fp32 and writes x / sqrt(mean + eps).
    pid = tl.program_id(0)
    b = pid // n_sblocks
    sb = pid % n_sblocks
    offs_s = sb * BLOCK_S + tl.arange(0, BLOCK_S)
    mask_s = offs_s < S
    base = b.to(tl.int64) * C * S
    offs_c = tl.arange(0, BLOCK_C)
    if SINGLE:
        # All C channels fit in one tile: read once, write once.
        mask = (offs_c[:, None] < C) & mask_s[None, :]
        offs = base + offs_c[:, None].to(tl.int64) * S + offs_s[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        ss = tl.sum(x * x, axis=0)
        rms = tl.sqrt_rn(ss / C + eps)
        inv = 1.0 / rms
        tl.store(out_ptr + offs, (x * inv[None, :]).to(out_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros((BLOCK_C, BLOCK_S), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + offs_c
            mask = (cc[:, None] < C) & mask_s[None, :]
            offs = base + cc[:, None].to(tl.int64) * S + offs_s[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            acc += x * x
        ss = tl.sum(acc, axis=0)
        rms = tl.sqrt_rn(ss / C + eps)
        inv = 1.0 / rms
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + offs_c
            mask = (cc[:, None] < C) & mask_s[None, :]
            offs = base + cc[:, None].to(tl.int64) * S + offs_s[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_ptr + offs, (x * inv[None, :]).to(out_ptr.dtype.element_ty), mask=mask)


class ModelNew(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() >= 2
        x = x.contiguous()
        out = torch.empty_like(x)
        B, C = x.shape[0], x.shape[1]
        S = 1
        for d in x.shape[2:]:
            S *= d
        if x.numel() == 0:
            return out
        BLOCK_C = triton.next_power_of_2(C)
        if BLOCK_C <= 256:
            single = True
            BLOCK_S = max(1, min(triton.next_power_of_2(S), 16384 // BLOCK_C))
        else:
            single = False
            BLOCK_C = 32
            BLOCK_S = max(1, min(triton.next_power_of_2(S), 256))
        warps = 8 if BLOCK_C * BLOCK_S >= 8192 else 4
        n_sblocks = triton.cdiv(S, BLOCK_S)
        grid = (B * n_sblocks,)
        _rmsnorm_kernel[grid](
            x,
            out,
            C,
            S,
            n_sblocks,
            float(self.eps),
            BLOCK_C=BLOCK_C,
            BLOCK_S=BLOCK_S,
            SINGLE=single,
            num_warps=warps,
        )
        return out
