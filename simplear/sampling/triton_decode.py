"""The one-token decode step as a few fused Triton kernels per layer (CUDA, a few rows).

At batch 1 with CFG a decode step multiplies 2 rows by every weight matrix: it is bound by
reading the weights, and with cuBLAS and inductor it came out as ~28 small kernels per layer, each
latency-bound (docs/benchmarks.md: 1.32 ms per step against a 0.29 ms bandwidth floor for
`simplear-0.5b`). Here a layer is six kernels, each reading its weights once:

1. RMSNorm + the q|k|v product + bias (before the rotary embedding);
2. attention over the cache in parallel column blocks (flash-decoding), which rotates q and the
   new k and writes the new k and v into the cache;
3. a small kernel that merges the blocks' partial softmaxes;
4. the output projection with the residual added in place;
5. RMSNorm + the gate|up product + SiLU(gate)·up;
6. the down projection + residual.

Then RMSNorm + the visual head, and for plain sampling CFG + temperature + the inverse-CDF draw in
two kernels (`sample_plain`). Products of 1-4 rows run on the CUDA cores (`_fma_kernel`), larger
ones and the head on the tensor cores (`_mm_kernel`). Every rounding the stock model does in the
weights' dtype (bf16/fp16: the norm's output, each product's output, the bias, each rotary term,
SiLU, the residual sums) is done here at the same points; only the order of the fp32 sums differs,
as it does between any two matrix-product kernels. Used by `FastEngine(kernels="triton"|"auto")`;
figures in docs/benchmarks.md ("GPU, 2026-11-24").
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

MAX_ROWS = 16  # rows (CFG rows included) the kernels take
# Rows up to which the engine decodes with these kernels: the tensor-core path (5-16 rows) measured
# slower than the compiled torch step (docs/benchmarks.md), the CUDA-core one (1-4 rows) faster.
ENGINE_ROWS = 4
FMA_ROWS = 4  # up to this many rows a product may run on the CUDA cores (`_fma_kernel`)


@triton.jit
def _rms_scale(x_ptr, stride_x, rows, hidden, eps, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
    """1 / sqrt(mean(x²) + eps) of each row, in fp32 (BLOCK_M×1)."""
    r = tl.arange(0, BLOCK_M)[:, None]
    h = tl.arange(0, BLOCK_H)[None, :]
    x = tl.load(x_ptr + r * stride_x + h, mask=(r < rows) & (h < hidden), other=0.0).to(tl.float32)
    return tl.rsqrt(tl.sum(x * x, axis=1, keep_dims=True) / hidden + eps)


@triton.jit
def _mm_kernel(x_ptr, ln_ptr, w_ptr, b_ptr, out_ptr, rows, k_size, n_size, stride_x, stride_w, stride_out, eps,
               NORM: tl.constexpr, EPILOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, PAIR_OFFSET: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
               PRECISION: tl.constexpr):
    """x (rows ≤ BLOCK_M, padded with zero rows) times BLOCK_N rows of W, on the tensor cores.

    The rows are few, so the kernel is bound by reading W: each program streams its rows of W
    through a software pipeline (`num_stages`) of BLOCK_K-wide tiles. NORM: x is RMS-normalised
    with weight `ln` first (as Qwen2RMSNorm: x·rstd rounded to the dtype, times the weight,
    rounded). EPILOGUE 0: out = the product rounded to W's dtype (+ bias, rounded), stored as out's
    dtype; 1: out += the rounded product, in place (the residual stream); 2: W's rows n and
    n + PAIR_OFFSET are gate and up, out = SiLU(gate)·up, each rounded like the model's.
    """
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)[:, None]
    kk = tl.arange(0, BLOCK_K)
    if NORM:
        rstd = _rms_scale(x_ptr, stride_x, rows, k_size, eps, BLOCK_M, BLOCK_H)
    dtype = w_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    n_ok = n[None, :] < n_size
    for k0 in range(0, k_size, BLOCK_K):
        k = k0 + kk
        x = tl.load(x_ptr + m * stride_x + k[None, :], mask=(m < rows) & (k[None, :] < k_size), other=0.0)
        if NORM:
            ln = tl.load(ln_ptr + k, mask=k < k_size, other=0.0).to(tl.float32)
            x = (x.to(tl.float32) * rstd).to(dtype)
            x = (ln[None, :] * x.to(tl.float32)).to(dtype)
        w_ptrs = w_ptr + n[None, :] * stride_w + k[:, None]  # BLOCK_K×BLOCK_N: W's rows as columns
        w_ok = n_ok & (k[:, None] < k_size)
        acc = tl.dot(x, tl.load(w_ptrs, mask=w_ok, other=0.0), acc, input_precision=PRECISION)
        if EPILOGUE == 2:
            acc2 = tl.dot(x, tl.load(w_ptrs + PAIR_OFFSET * stride_w, mask=w_ok, other=0.0), acc2,
                          input_precision=PRECISION)
    _epilogue(acc, acc2, out_ptr, b_ptr, m, n, rows, n_size, stride_out, dtype, EPILOGUE, HAS_BIAS)


@triton.jit
def _epilogue(acc, acc2, out_ptr, b_ptr, m, n, rows, n_size, stride_out, dtype: tl.constexpr,
              EPILOGUE: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Store a product's rows m (M×1) and columns n (N) as `_mm_kernel` describes (EPILOGUE)."""
    ptrs = out_ptr + m * stride_out + n[None, :]
    ok = (m < rows) & (n[None, :] < n_size)
    y = acc.to(dtype).to(tl.float32)  # the product, rounded like the model's
    if EPILOGUE == 0:
        if HAS_BIAS:
            y = (y + tl.load(b_ptr + n, mask=n < n_size, other=0.0).to(tl.float32)[None, :]).to(dtype).to(tl.float32)
        tl.store(ptrs, y.to(out_ptr.dtype.element_ty), mask=ok)
    elif EPILOGUE == 1:
        old = tl.load(ptrs, mask=ok, other=0.0)
        tl.store(ptrs, (old.to(tl.float32) + y).to(old.dtype), mask=ok)
    else:
        silu = (y / (1.0 + tl.exp(-y))).to(dtype).to(tl.float32)
        tl.store(ptrs, (silu * acc2.to(dtype).to(tl.float32)).to(dtype), mask=ok)


@triton.jit
def _fma_row(x_ptr, r: tl.constexpr, stride_x, k, k_size, ln, rstd, m, dtype: tl.constexpr, NORM: tl.constexpr):
    """Input row r at columns k (fp32, 1×BLOCK_K), normalised as in `_mm_kernel` when NORM."""
    x = tl.load(x_ptr + r * stride_x + k, mask=k < k_size, other=0.0)
    if NORM:
        scale = tl.sum(tl.where(m == r, rstd, 0.0))  # this row's 1/rms
        x = (x.to(tl.float32) * scale).to(dtype)
        x = (ln * x.to(tl.float32)).to(dtype)
    return x.to(tl.float32)[None, :]


@triton.jit
def _gather_rows(m, a0, a1, a2, a3, ROWS: tl.constexpr):
    """The per-row accumulators summed over K, as the rows of one BLOCK_R×BLOCK_N tile."""
    acc = tl.where(m == 0, tl.sum(a0, axis=1)[None, :], 0.0)
    if ROWS > 1:
        acc = tl.where(m == 1, tl.sum(a1, axis=1)[None, :], acc)
    if ROWS > 2:
        acc = tl.where(m == 2, tl.sum(a2, axis=1)[None, :], acc)
    if ROWS > 3:
        acc = tl.where(m == 3, tl.sum(a3, axis=1)[None, :], acc)
    return acc


@triton.jit
def _fma_kernel(x_ptr, ln_ptr, w_ptr, b_ptr, out_ptr, rows, k_size, n_size, stride_x, stride_w, stride_out, eps,
                NORM: tl.constexpr, EPILOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, PAIR_OFFSET: tl.constexpr,
                ROWS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                BLOCK_H: tl.constexpr):
    """`_mm_kernel`'s product on the CUDA cores, for 1-4 rows: no padding to 16 rows.

    The program's weight tile is requested first, so that its transfer from memory overlaps the
    input's loads and the norm's statistics; the next K tile is requested before this one is used.
    Each row (and each of the pair's halves) has its own BLOCK_N×BLOCK_K accumulator of products,
    summed over K once at the end: the loop body is loads and multiply-adds only.
    """
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    kk = tl.arange(0, BLOCK_K)
    n_ok = n[:, None] < n_size
    w_ptrs = w_ptr + n[:, None] * stride_w + kk[None, :]
    w = tl.load(w_ptrs, mask=n_ok & (kk[None, :] < k_size), other=0.0)
    if EPILOGUE == 2:
        w2 = tl.load(w_ptrs + PAIR_OFFSET * stride_w, mask=n_ok & (kk[None, :] < k_size), other=0.0)
    else:
        w2 = w
    m = tl.arange(0, BLOCK_R)[:, None]
    if NORM:
        rstd = _rms_scale(x_ptr, stride_x, rows, k_size, eps, BLOCK_R, BLOCK_H)
    else:
        rstd = tl.zeros((BLOCK_R, 1), tl.float32)
    dtype = w_ptr.dtype.element_ty
    zero = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    a0, a1, a2, a3 = zero, zero, zero, zero  # row r: W tile · x_r; b*: the pair's second tile
    b0, b1, b2, b3 = zero, zero, zero, zero
    for k0 in range(0, k_size, BLOCK_K):
        next_ok = n_ok & (k0 + BLOCK_K + kk[None, :] < k_size)
        w_next = tl.load(w_ptrs + k0 + BLOCK_K, mask=next_ok, other=0.0)
        if EPILOGUE == 2:
            w2_next = tl.load(w_ptrs + PAIR_OFFSET * stride_w + k0 + BLOCK_K, mask=next_ok, other=0.0)
        else:
            w2_next = w_next
        k = k0 + kk
        ln = tl.load(ln_ptr + k, mask=k < k_size, other=0.0).to(tl.float32) if NORM else kk
        wf = w.to(tl.float32)
        w2f = w2.to(tl.float32)
        x = _fma_row(x_ptr, 0, stride_x, k, k_size, ln, rstd, m, dtype, NORM)
        a0 += wf * x
        if EPILOGUE == 2:
            b0 += w2f * x
        if ROWS > 1:
            x = _fma_row(x_ptr, 1, stride_x, k, k_size, ln, rstd, m, dtype, NORM)
            a1 += wf * x
            if EPILOGUE == 2:
                b1 += w2f * x
        if ROWS > 2:
            x = _fma_row(x_ptr, 2, stride_x, k, k_size, ln, rstd, m, dtype, NORM)
            a2 += wf * x
            if EPILOGUE == 2:
                b2 += w2f * x
        if ROWS > 3:
            x = _fma_row(x_ptr, 3, stride_x, k, k_size, ln, rstd, m, dtype, NORM)
            a3 += wf * x
            if EPILOGUE == 2:
                b3 += w2f * x
        w = w_next
        w2 = w2_next
    acc = _gather_rows(m, a0, a1, a2, a3, ROWS)
    acc2 = _gather_rows(m, b0, b1, b2, b3, ROWS) if EPILOGUE == 2 else acc
    _epilogue(acc, acc2, out_ptr, b_ptr, m, n, rows, n_size, stride_out, dtype, EPILOGUE, HAS_BIAS)


@triton.jit
def _rotate(lo, hi, cos_ptr, sin_ptr, position, stride_t, HALF: tl.constexpr):
    """Rotary embedding of a vector's halves (…×HALF each), rounded at each step like the model's
    `x·cos + rotate_half(x)·sin` in its dtype; `position` broadcasts against the halves' rows."""
    d = tl.arange(0, HALF)
    row = cos_ptr + position * stride_t
    c_lo = tl.load(row + d).to(tl.float32)
    c_hi = tl.load(row + HALF + d).to(tl.float32)
    row = sin_ptr + position * stride_t
    s_lo = tl.load(row + d).to(tl.float32)
    s_hi = tl.load(row + HALF + d).to(tl.float32)
    dtype = lo.dtype
    lo32, hi32 = lo.to(tl.float32), hi.to(tl.float32)
    new_lo = (lo32 * c_lo).to(dtype).to(tl.float32) + (-hi32 * s_lo).to(dtype).to(tl.float32)
    new_hi = (hi32 * c_hi).to(dtype).to(tl.float32) + (lo32 * s_hi).to(dtype).to(tl.float32)
    return new_lo.to(dtype), new_hi.to(dtype)


@triton.jit
def _attention_kernel(qkv_ptr, k_cache, v_cache, cos_ptr, sin_ptr, slot_ptr, start_ptr, part_acc, part_ml,
                      stride_qkv, stride_cr, stride_ch, stride_cs, stride_t, scale, chunk,
                      HEADS: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                      BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr, SPLITS: tl.constexpr, PRECISION: tl.constexpr):
    """Attention of one row's GROUP query heads (sharing KV head g) over cache columns
    [split·chunk, (split+1)·chunk) ∩ [start, slot]: unnormalised partial results (acc, max, sum).

    The q|k|v row comes in before the rotary embedding: each program rotates its queries; the
    program whose columns hold `slot` rotates the new key and writes it and the value into the
    caches first (scores are then the sum of the two halves' products, so no halves are joined).
    """
    HALF: tl.constexpr = HEAD_DIM // 2
    rg = tl.program_id(0)
    split = tl.program_id(1)
    r = rg // KV_HEADS
    g = rg % KV_HEADS
    slot = tl.load(slot_ptr + r)
    begin = tl.load(start_ptr + r)
    position = tl.maximum(slot - begin, 0)
    lo = tl.maximum(split * chunk, begin)
    hi = tl.minimum((split + 1) * chunk, slot + 1)
    d = tl.arange(0, HALF)
    dv = tl.arange(0, HEAD_DIM)
    base = r * stride_cr + g * stride_ch
    row = qkv_ptr + r * stride_qkv
    i = tl.arange(0, BLOCK_G)[:, None]
    query = row + (g * GROUP + i) * HEAD_DIM
    q_ok = i < GROUP
    q_lo = tl.load(query + d[None, :], mask=q_ok, other=0.0)  # requested first, used after the write below
    q_hi = tl.load(query + HALF + d[None, :], mask=q_ok, other=0.0)
    if (split * chunk <= slot) & (slot < (split + 1) * chunk):
        key = row + (HEADS + g) * HEAD_DIM
        k_lo, k_hi = _rotate(tl.load(key + d), tl.load(key + HALF + d), cos_ptr, sin_ptr, position, stride_t, HALF)
        tl.store(k_cache + base + slot * stride_cs + d, k_lo)
        tl.store(k_cache + base + slot * stride_cs + HALF + d, k_hi)
        tl.store(v_cache + base + slot * stride_cs + dv, tl.load(row + (HEADS + KV_HEADS + g) * HEAD_DIM + dv))
        tl.debug_barrier()  # the column is read back below by other threads of this program
    q_lo, q_hi = _rotate(q_lo, q_hi, cos_ptr, sin_ptr, position, stride_t, HALF)
    m = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    total = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, HEAD_DIM), tl.float32)
    s_off = tl.arange(0, BLOCK_S)
    for s0 in range(lo, hi, BLOCK_S):
        s = s0 + s_off
        ok = s < hi
        keys = k_cache + base + s[:, None] * stride_cs
        # All three tiles requested before any is used.
        k_lo = tl.load(keys + d[None, :], mask=ok[:, None], other=0.0)
        k_hi = tl.load(keys + HALF + d[None, :], mask=ok[:, None], other=0.0)
        values = tl.load(v_cache + base + s[:, None] * stride_cs + dv[None, :], mask=ok[:, None], other=0.0)
        scores = tl.dot(q_lo, tl.trans(k_lo), input_precision=PRECISION)
        scores = tl.dot(q_hi, tl.trans(k_hi), scores, input_precision=PRECISION)
        # Scores rounded to the dtype like the model's matmul output, then scaled in fp32.
        scores = scores.to(q_lo.dtype).to(tl.float32) * scale
        scores = tl.where(ok[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(scores - m_new[:, None])
        total = total * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(values.dtype), values, input_precision=PRECISION)
        m = m_new
    out = (rg * SPLITS + split) * BLOCK_G + tl.arange(0, BLOCK_G)
    tl.store(part_acc + out[:, None] * HEAD_DIM + dv[None, :], acc)
    tl.store(part_ml + out * 2, m)
    tl.store(part_ml + out * 2 + 1, total)


@triton.jit
def _merge_kernel(part_acc, part_ml, slot_ptr, out_ptr, stride_out, chunk, KV_HEADS: tl.constexpr,
                  GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, SPLITS: tl.constexpr):
    """One query head's attention output from the partial softmaxes of the splits up to the slot."""
    pid = tl.program_id(0)  # (row, kv head, group member)
    rg = pid // GROUP
    i = pid % GROUP
    r = rg // KV_HEADS
    g = rg % KV_HEADS
    sp = tl.arange(0, SPLITS)
    used = sp * chunk <= tl.load(slot_ptr + r)  # later splits hold no column yet
    idx = (rg * SPLITS + sp) * BLOCK_G + i
    m = tl.load(part_ml + idx * 2, mask=used, other=float("-inf"))
    total = tl.load(part_ml + idx * 2 + 1, mask=used, other=0.0)
    m_all = tl.max(m, axis=0)
    w = tl.where(m > float("-inf"), tl.exp(m - m_all), 0.0)
    d = tl.arange(0, HEAD_DIM)
    acc = tl.load(part_acc + idx[:, None] * HEAD_DIM + d[None, :], mask=used[:, None], other=0.0)
    att = tl.sum(acc * w[:, None], axis=0) / tl.sum(total * w, axis=0)
    tl.store(out_ptr + r * stride_out + (g * GROUP + i) * HEAD_DIM + d, att.to(out_ptr.dtype.element_ty))


@triton.jit
def _guided(logits_ptr, stride_l, b, half, codes, K, cfg_scale, temperature, CFG: tl.constexpr):
    """Image b's logits at `codes` after CFG (`u + s·(c − u)`, fp32) and temperature."""
    ok = codes < K
    cond = tl.load(logits_ptr + b * stride_l + codes, mask=ok, other=float("-inf"))
    if CFG:
        uncond = tl.load(logits_ptr + (b + half) * stride_l + codes, mask=ok, other=0.0)
        cond = tl.where(ok, uncond + cfg_scale * (cond - uncond), float("-inf"))
    return cond / temperature


@triton.jit
def _sample_chunks_kernel(logits_ptr, values_ptr, part_ptr, stride_l, half, K, chunk,
                          CFG: tl.constexpr, BLOCK: tl.constexpr, PARTS: tl.constexpr):
    """Per image and chunk of codes: the chunk's max and its sum of exp(logit − max)."""
    b = tl.program_id(0)
    p = tl.program_id(1)
    codes = p * chunk + tl.arange(0, BLOCK)
    codes = tl.where(tl.arange(0, BLOCK) < chunk, codes, K)  # past the chunk: masked like past K
    x = _guided(logits_ptr, stride_l, b, half, codes, K, tl.load(values_ptr), tl.load(values_ptr + 1), CFG)
    m = tl.max(x, axis=0)
    total = tl.sum(tl.where(x > float("-inf"), tl.exp(x - m), 0.0), axis=0)
    tl.store(part_ptr + (b * PARTS + p) * 2, m)
    tl.store(part_ptr + (b * PARTS + p) * 2 + 1, total)


@triton.jit
def _sample_pick_kernel(logits_ptr, values_ptr, part_ptr, u_ptr, out_ptr, stride_l, half, K, chunk,
                        CFG: tl.constexpr, BLOCK: tl.constexpr, PARTS: tl.constexpr):
    """Image b's code: the first whose cumulative probability exceeds u · total, as `invert_cdf`.

    The chunks' sums, rescaled to the global max, locate the chunk where the running sum passes
    the target; a cumulative sum inside that chunk gives the code.
    """
    b = tl.program_id(0)
    parts = tl.arange(0, PARTS)
    m = tl.load(part_ptr + (b * PARTS + parts) * 2)
    sums = tl.load(part_ptr + (b * PARTS + parts) * 2 + 1)
    top = tl.max(m, axis=0)
    sums = tl.where(m > float("-inf"), sums * tl.exp(m - top), 0.0)
    target = tl.load(u_ptr + b) * tl.sum(sums, axis=0)
    before = tl.cumsum(sums, axis=0) - sums  # mass of the chunks before each chunk
    # The chunk holding the code: the last chunk whose preceding mass is still <= target.
    pick = tl.max(tl.where((before <= target) & (sums > 0), parts, 0), axis=0)
    base = tl.sum(tl.where(parts == pick, before, 0.0), axis=0)
    offs = tl.arange(0, BLOCK)
    codes = tl.where(offs < chunk, pick * chunk + offs, K)
    x = _guided(logits_ptr, stride_l, b, half, codes, K, tl.load(values_ptr), tl.load(values_ptr + 1), CFG)
    p = tl.where(x > float("-inf"), tl.exp(x - top), 0.0)
    cdf = base + tl.cumsum(p, axis=0)
    count = tl.sum(((cdf <= target) & (codes < K)).to(tl.int32), axis=0)
    # Round-off can leave the whole chunk at or below the target: then its last code.
    last = tl.minimum(pick * chunk + chunk, K) - 1
    tl.store(out_ptr + b, tl.minimum(pick * chunk + count, last).to(tl.int64))


def sample_plain(logits: torch.Tensor, u: torch.Tensor, values: torch.Tensor, cfg: bool) -> torch.Tensor:
    """Codes drawn from fp32 visual logits (2B×K with CFG, conditional rows first; else B×K) with
    CFG scale values[0] and temperature values[1] (> 0), no top-k/top-p, by inverting the CDF at
    u (B×1): `invert_cdf(probs_from_logits(split_cfg(logits)), u)` in two kernels."""
    rows, size = logits.shape
    images = rows // 2 if cfg else rows
    parts = 64
    chunk = triton.cdiv(size, parts)
    block = _pow2(chunk)
    part = torch.empty(images * parts, 2, dtype=torch.float32, device=logits.device)
    codes = torch.empty(images, dtype=torch.long, device=logits.device)
    common = dict(CFG=cfg, BLOCK=block, PARTS=parts)
    _sample_chunks_kernel[(images, parts)](logits, values, part, logits.stride(0), images, size, chunk, **common)
    _sample_pick_kernel[(images,)](logits, values, part, u, codes, logits.stride(0), images, size, chunk, **common)
    return codes


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class TritonDecoder:
    """The decode step of a `FastEngine` (its weight snapshot, caches and rotary tables) in Triton.

    `forward(ids, slots, start)` with ids R×1 and R <= MAX_ROWS gives the visual logits (R×1×K,
    fp32) and writes the new keys/values into the engine's caches at `slots`, like
    `FastEngine._forward`. Tile sizes were chosen by timing on an H100 (docs/benchmarks.md).
    """

    def __init__(self, engine):
        if engine.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("the Triton decode kernels need a CUDA device")
        if engine.dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ValueError(f"the Triton decode kernels take bf16, fp16 or fp32 weights, not {engine.dtype}")
        dim = engine.head_dim
        if dim & (dim - 1) or dim < 32:
            raise ValueError(f"the Triton decode kernels need a power-of-two head_dim >= 32, got {dim}")
        self.engine = engine
        self.hidden = engine.weights.layers[0].wqkv.shape[1]
        self.inter = engine.weights.layers[0].wd.shape[1]
        # (kernel, BLOCK_N, BLOCK_K, num_warps, num_stages) per product, kernel "fma" (`_fma_kernel`,
        # used up to FMA_ROWS rows) or "dot" (`_mm_kernel`); (splits, BLOCK_S, num_warps) for
        # attention (splits: a power of two).
        self.tiles = dict(qkv=("fma", 2, 1024, 4, 1), o=("fma", 4, 1024, 4, 1), gate_up=("fma", 8, 128, 4, 1),
                          down=("fma", 2, 1024, 4, 1), head=("dot", 512, 64, 8, 4), attention=(128, 64, 4))

    def _mm(self, name, x, w, out, *, ln=None, bias=None, epilogue=0, pair_offset=0):
        kind, block_n, block_k, warps, stages = self.tiles[name]
        if kind == "dot" and w.element_size() == 4:  # fp32: narrower K tiles, so 4-byte tiles fit shared memory
            block_k, stages = min(block_k, 32), min(stages, 3)
        rows, k_size = x.shape
        n_size = w.shape[0] - pair_offset
        args = (x, ln if ln is not None else w, w, bias if bias is not None else w, out, rows, k_size, n_size,
                x.stride(0), w.stride(0), out.stride(0), self.engine.eps)
        flags = dict(NORM=ln is not None, EPILOGUE=epilogue, HAS_BIAS=bias is not None, PAIR_OFFSET=pair_offset,
                     BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_H=_pow2(k_size), num_warps=warps, num_stages=stages)
        grid = (triton.cdiv(n_size, block_n),)
        if kind == "fma" and rows <= FMA_ROWS:
            _fma_kernel[grid](*args, ROWS=rows, BLOCK_R=_pow2(rows), **flags)
        else:
            _mm_kernel[grid](*args, BLOCK_M=max(16, _pow2(rows)), PRECISION=self.precision(x), **flags)

    def _attention(self, qkv, k_cache, v_cache, slot, start, att, part_acc, part_ml):
        engine = self.engine
        heads, kv_heads, dim = engine.num_heads, engine.num_kv_heads, engine.head_dim
        group = heads // kv_heads
        rows = qkv.shape[0]
        splits, block_s, warps = self.tiles["attention"]
        block_g = max(16, _pow2(group))
        chunk = triton.cdiv(triton.cdiv(engine.cache_length, splits), block_s) * block_s  # whole tiles per split
        cos, sin = engine._cos, engine._sin
        _attention_kernel[(rows * kv_heads, splits)](
            qkv, k_cache, v_cache, cos, sin, slot, start, part_acc, part_ml, qkv.stride(0),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), cos.stride(0), dim**-0.5, chunk,
            HEADS=heads, KV_HEADS=kv_heads, GROUP=group, HEAD_DIM=dim, BLOCK_G=block_g, BLOCK_S=block_s,
            SPLITS=splits, PRECISION=self.precision(qkv), num_warps=warps)
        _merge_kernel[(rows * heads,)](part_acc, part_ml, slot, att, att.stride(0), chunk, KV_HEADS=kv_heads,
                                       GROUP=group, HEAD_DIM=dim, BLOCK_G=block_g, SPLITS=splits)

    def scratch(self, rows: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention's partial results: (acc, max|sum) per row, KV head, split and query slot."""
        splits = self.tiles["attention"][0]
        size = rows * self.engine.num_kv_heads * splits * max(16, _pow2(self.engine.num_heads // self.engine.num_kv_heads))
        return (torch.empty(size, self.engine.head_dim, dtype=torch.float32, device=device),
                torch.empty(size, 2, dtype=torch.float32, device=device))

    @staticmethod
    def precision(x: torch.Tensor) -> str:
        return "ieee" if x.dtype == torch.float32 else "tf32"  # tf32 only names fp32 inputs' mode

    def forward(self, ids: torch.Tensor, slots: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        engine = self.engine
        rows = ids.shape[0]
        if ids.shape[1] != 1 or rows > MAX_ROWS:
            raise ValueError(f"the Triton decode step takes R×1 ids with R <= {MAX_ROWS}, got {tuple(ids.shape)}")
        heads, kv_heads, dim = engine.num_heads, engine.num_kv_heads, engine.head_dim
        weights = engine.weights
        slot = slots[:, 0].contiguous()
        start = start.contiguous()
        x = torch.nn.functional.embedding(ids[:, 0], weights.top.embed)  # R×H, the residual stream
        qkv = torch.empty(rows, (heads + 2 * kv_heads) * dim, dtype=x.dtype, device=x.device)
        att = torch.empty(rows, heads * dim, dtype=x.dtype, device=x.device)
        h = torch.empty(rows, self.inter, dtype=x.dtype, device=x.device)
        part_acc, part_ml = self.scratch(rows, x.device)
        for layer, k_cache, v_cache in zip(weights.layers, engine.k_cache, engine.v_cache):
            self._mm("qkv", x, layer.wqkv, qkv, ln=layer.ln1, bias=layer.bqkv)
            self._attention(qkv, k_cache, v_cache, slot, start, att, part_acc, part_ml)
            self._mm("o", att, layer.wo, x, epilogue=1)
            self._mm("gate_up", x, layer.wgu, h, ln=layer.ln2, epilogue=2, pair_offset=self.inter)
            self._mm("down", h, layer.wd, x, epilogue=1)
        logits = torch.empty(rows, weights.top.head.shape[0], dtype=torch.float32, device=x.device)
        self._mm("head", x, weights.top.head, logits, ln=weights.top.final_norm)
        return logits[:, None]
