import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _ln_partial_stats_kernel(
    x_ptr, pmean_ptr, pm2_ptr, N, n_chunks, CHUNK: tl.constexpr, BLOCK: tl.constexpr
):
    # One program per (row, chunk of CHUNK elements): the chunk's mean and sum of squared deviations,
    # combined block by block with Chan's formula (each block centred on its own mean).
    pid = tl.program_id(0)
    row = pid // n_chunks
    chunk = pid % n_chunks
    start = chunk.to(tl.int64) * CHUNK
    base = row.to(tl.int64) * N + start
    n_here = tl.minimum(N - start, CHUNK)
    n_blocks = tl.cdiv(n_here, BLOCK)
    cols = tl.arange(0, BLOCK)
    mean = 0.0
    m2 = 0.0
    cnt = 0.0
    for b in range(0, n_blocks):
        off = b * BLOCK
        mask = off + cols < n_here
        x = tl.load(x_ptr + base + off + cols, mask=mask, other=0.0).to(tl.float32)
        nb = tl.minimum(n_here - off, BLOCK).to(tl.float32)
        bmean = tl.sum(x, axis=0) / nb
        d = tl.where(mask, x - bmean, 0.0)
        bm2 = tl.sum(d * d, axis=0)
        n_new = cnt + nb
        delta = bmean - mean
        mean = mean + delta * (nb / n_new)
        m2 = m2 + bm2 + delta * delta * (cnt * nb / n_new)
        cnt = n_new
    tl.store(pmean_ptr + pid, mean)
    tl.store(pm2_ptr + pid, m2)


@triton.jit
def _ln_finalize_kernel(
    pmean_ptr, pm2_ptr, mean_ptr, rstd_ptr, N, n_chunks, eps, CHUNK: tl.constexpr, BLOCK_P: tl.constexpr
):
    # One program per row: combine the chunks' (count, mean, M2) exactly (two passes over the partials).
    row = tl.program_id(0)
    base = row.to(tl.int64) * n_chunks
    ps = tl.arange(0, BLOCK_P)
    acc = tl.zeros([BLOCK_P], dtype=tl.float32)
    for p0 in range(0, n_chunks, BLOCK_P):
        p = p0 + ps
        mask = p < n_chunks
        cnt = tl.minimum(N - p.to(tl.int64) * CHUNK, CHUNK).to(tl.float32)
        m = tl.load(pmean_ptr + base + p, mask=mask, other=0.0)
        acc += tl.where(mask, cnt * m, 0.0)
    mean = tl.sum(acc, axis=0) / N
    acc2 = tl.zeros([BLOCK_P], dtype=tl.float32)
    for p0 in range(0, n_chunks, BLOCK_P):
        p = p0 + ps
        mask = p < n_chunks
        cnt = tl.minimum(N - p.to(tl.int64) * CHUNK, CHUNK).to(tl.float32)
        m = tl.load(pmean_ptr + base + p, mask=mask, other=0.0)
        q = tl.load(pm2_ptr + base + p, mask=mask, other=0.0)
        d = m - mean
        acc2 += tl.where(mask, q + cnt * d * d, 0.0)
    var = tl.sum(acc2, axis=0) / N
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, 1.0 / tl.sqrt(var + eps))


@triton.jit
def _ln_normalize_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    mean_ptr,
    rstd_ptr,
    out_ptr,
    N,
    n_col_blocks,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    row = pid // n_col_blocks
    cb = pid % n_col_blocks
    cols = cb.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < N
    offs = row.to(tl.int64) * N + cols
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + row)
    rstd = tl.load(rstd_ptr + row)
    y = (x - mean) * rstd
    if HAS_W:
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        y = y * w
    if HAS_B:
        b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        y = y + b
    tl.store(out_ptr + offs, y, mask=mask)


class ModelNew(nn.Module):
    """LayerNorm over the trailing `normalized_shape` dims; the nn.LayerNorm only holds the parameters."""

    def __init__(self, normalized_shape: tuple):
        super().__init__()
        self.ln = nn.LayerNorm(normalized_shape=normalized_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = torch.empty_like(x)
        N = 1
        for s in self.ln.normalized_shape:
            N *= s
        total = x.numel()
        if total == 0:
            return out
        rows = total // N
        dev = x.device
        # stats: split each row into chunks so that even a few long rows fill the GPU
        block = min(4096, max(16, triton.next_power_of_2(N)))
        chunk = block * 8
        n_chunks = triton.cdiv(N, chunk)
        pmean = torch.empty(rows * n_chunks, dtype=torch.float32, device=dev)
        pm2 = torch.empty(rows * n_chunks, dtype=torch.float32, device=dev)
        _ln_partial_stats_kernel[(rows * n_chunks,)](
            x, pmean, pm2, N, n_chunks, CHUNK=chunk, BLOCK=block, num_warps=8
        )
        mean = torch.empty(rows, dtype=torch.float32, device=dev)
        rstd = torch.empty(rows, dtype=torch.float32, device=dev)
        block_p = min(1024, max(16, triton.next_power_of_2(n_chunks)))
        _ln_finalize_kernel[(rows,)](
            pmean, pm2, mean, rstd, N, n_chunks, float(self.ln.eps), CHUNK=chunk, BLOCK_P=block_p, num_warps=4
        )
        w = self.ln.weight
        b = self.ln.bias
        has_w = w is not None
        has_b = b is not None
        w_arg = w.detach().contiguous() if has_w else x
        b_arg = b.detach().contiguous() if has_b else x
        nblock = min(4096, max(16, triton.next_power_of_2(N)))
        n_col_blocks = triton.cdiv(N, nblock)
        _ln_normalize_kernel[(rows * n_col_blocks,)](
            x,
            w_arg,
            b_arg,
            mean,
            rstd,
            out,
            N,
            n_col_blocks,
            HAS_W=has_w,
            HAS_B=has_b,
            BLOCK=nblock,
            num_warps=8,
        )
        return out
