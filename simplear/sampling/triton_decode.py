"""The one-token decode step as a few fused Triton kernels per layer (CUDA, a few rows).

At batch 1 with CFG a decode step multiplies 2 rows by every weight matrix: it is bound by
reading the weights, and with cuBLAS and inductor it came out as ~28 small kernels per layer, each
latency-bound (docs/benchmarks.md: 1.32 ms per step against a 0.29 ms bandwidth floor for
`simplear-0.5b`). Here a layer is five kernels, each reading its weights once with no intermediate
going through memory:

1. RMSNorm + the q|k|v product + bias + rotary embedding, k and v written into the cache;
2. attention over the cache in parallel column blocks (flash-decoding), then
3. a small kernel that merges the blocks' partial softmaxes;
4. the output projection with the residual added in place;
5. RMSNorm + the gate|up product + SiLU(gate)·up, then 6. the down projection + residual.

The final RMSNorm + the visual head is one more kernel. Every rounding the stock model does in the
weights' dtype (bf16/fp16: the norm's output, each product's output, the bias, each rotary term,
SiLU, the residual sums) is done here at the same points; only the order of the fp32 sums differs,
as it does between any two matrix-product kernels. Used by `FastEngine(kernels="triton")`.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

MAX_ROWS = 8  # rows (CFG rows included) that the register-tiled products take; more: use torch


@triton.jit
def _rms_scale(x_ptr, stride_x, rows, hidden, eps, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr):
    """1 / sqrt(mean(x²) + eps) of each row, in fp32 (BLOCK_R×1)."""
    r = tl.arange(0, BLOCK_R)[:, None]
    h = tl.arange(0, BLOCK_H)[None, :]
    x = tl.load(x_ptr + r * stride_x + h, mask=(r < rows) & (h < hidden), other=0.0).to(tl.float32)
    return tl.rsqrt(tl.sum(x * x, axis=1, keep_dims=True) / hidden + eps)


@triton.jit
def _input_block(x_ptr, stride_x, ln_ptr, rstd, rows, hidden, k0, NORM: tl.constexpr,
                 BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """Columns [k0, k0+BLOCK_K) of the input rows (BLOCK_R×1×BLOCK_K fp32), normalised like
    Qwen2RMSNorm when NORM: (x·rstd) rounded to the dtype, times the weight, rounded again."""
    r = tl.arange(0, BLOCK_R)[:, None]
    k = k0 + tl.arange(0, BLOCK_K)[None, :]
    x = tl.load(x_ptr + r * stride_x + k, mask=(r < rows) & (k < hidden), other=0.0)
    if NORM:
        dtype = x.dtype
        ln = tl.load(ln_ptr + k, mask=k < hidden, other=0.0).to(tl.float32)
        x = (x.to(tl.float32) * rstd).to(dtype)
        x = (ln * x.to(tl.float32)).to(dtype)
    return x.to(tl.float32)[:, None, :]


@triton.jit
def _gemv_kernel(x_ptr, ln_ptr, w_ptr, out_ptr, rows, hidden, n_out, stride_x, stride_w, stride_out, eps,
                 NORM: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr):
    """out[r, n] (+)= x[r] · W[n] for BLOCK_N outputs: RESIDUAL adds the product, rounded, to `out`
    in place (the residual stream); else `out` gets the product rounded to W's dtype, stored as
    `out`'s dtype (the fp32 logits). NORM: x is RMS-normalised with weight `ln` first."""
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    if NORM:
        rstd = _rms_scale(x_ptr, stride_x, rows, hidden, eps, BLOCK_R, BLOCK_H)
    else:
        rstd = tl.full((BLOCK_R, 1), 1.0, tl.float32)
    acc = tl.zeros((BLOCK_R, BLOCK_N, BLOCK_K), dtype=tl.float32)
    # The weight tile of the next iteration is loaded before this one's is used, so a program
    # always has a tile in flight (a load only blocks where its value is first used).
    k = tl.arange(0, BLOCK_K)[None, :]
    w_ptrs = w_ptr + n[:, None] * stride_w + k
    n_ok = n[:, None] < n_out
    w = tl.load(w_ptrs, mask=n_ok & (k < hidden), other=0.0)
    for k0 in range(0, hidden, BLOCK_K):
        w_next = tl.load(w_ptrs + k0 + BLOCK_K, mask=n_ok & (k0 + BLOCK_K + k < hidden), other=0.0)
        x = _input_block(x_ptr, stride_x, ln_ptr, rstd, rows, hidden, k0, NORM, BLOCK_R, BLOCK_K)
        acc += x * w.to(tl.float32)[None, :, :]
        w = w_next
    y = tl.sum(acc, axis=2).to(w_ptr.dtype.element_ty)  # the product, rounded like the model's
    r = tl.arange(0, BLOCK_R)[:, None]
    ptrs = out_ptr + r * stride_out + n[None, :]
    mask = (r < rows) & (n[None, :] < n_out)
    if RESIDUAL:
        old = tl.load(ptrs, mask=mask, other=0.0)
        tl.store(ptrs, (old.to(tl.float32) + y.to(tl.float32)).to(old.dtype), mask=mask)
    else:
        tl.store(ptrs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _pair_gemv_kernel(x_ptr, ln_ptr, w_ptr, b_ptr, out_ptr, k_cache, v_cache, cos_ptr, sin_ptr, slot_ptr, start_ptr,
                      rows, hidden, stride_x, stride_w, stride_out, eps,
                      stride_cr, stride_ch, stride_cs, stride_t,
                      MODE: tl.constexpr, HAS_BIAS: tl.constexpr, HEADS: tl.constexpr, KV_HEADS: tl.constexpr,
                      HEAD_DIM: tl.constexpr, INTER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr):
    """Two row blocks of W at once from RMS-normalised x, combined in the epilogue.

    MODE 0 (attention input): W is q|k|v; the blocks are columns j and j + HEAD_DIM/2 of one head,
    which the rotary embedding mixes. q goes to `out` (R×HEADS·HEAD_DIM), k and v into the caches at
    each row's slot. MODE 1 (MLP): W is gate|up; out[:, j] = SiLU(gate_j)·up_j (R×INTER).
    """
    pid = tl.program_id(0)
    j = tl.arange(0, BLOCK_N)
    if MODE == 0:
        half: tl.constexpr = HEAD_DIM // 2
        per_head: tl.constexpr = half // BLOCK_N
        head = pid // per_head
        col = (pid % per_head) * BLOCK_N + j  # within the head's first half
        n1 = head * HEAD_DIM + col
        n2 = n1 + half
    else:
        n1 = pid * BLOCK_N + j
        n2 = n1 + INTER
        head = 0
    n_limit = (HEADS + 2 * KV_HEADS) * HEAD_DIM if MODE == 0 else INTER
    rstd = _rms_scale(x_ptr, stride_x, rows, hidden, eps, BLOCK_R, BLOCK_H)
    acc1 = tl.zeros((BLOCK_R, BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_R, BLOCK_N, BLOCK_K), dtype=tl.float32)
    k = tl.arange(0, BLOCK_K)[None, :]
    n_ok = n1[:, None] < n_limit
    w1_ptrs = w_ptr + n1[:, None] * stride_w + k
    w2_ptrs = w_ptr + n2[:, None] * stride_w + k
    w1 = tl.load(w1_ptrs, mask=n_ok & (k < hidden), other=0.0)
    w2 = tl.load(w2_ptrs, mask=n_ok & (k < hidden), other=0.0)
    for k0 in range(0, hidden, BLOCK_K):  # next tiles in flight while these are used (as in _gemv_kernel)
        next_ok = n_ok & (k0 + BLOCK_K + k < hidden)
        w1_next = tl.load(w1_ptrs + k0 + BLOCK_K, mask=next_ok, other=0.0)
        w2_next = tl.load(w2_ptrs + k0 + BLOCK_K, mask=next_ok, other=0.0)
        x = _input_block(x_ptr, stride_x, ln_ptr, rstd, rows, hidden, k0, True, BLOCK_R, BLOCK_K)
        acc1 += x * w1.to(tl.float32)[None, :, :]
        acc2 += x * w2.to(tl.float32)[None, :, :]
        w1, w2 = w1_next, w2_next
    dtype = w_ptr.dtype.element_ty
    y1 = tl.sum(acc1, axis=2).to(dtype).to(tl.float32)
    y2 = tl.sum(acc2, axis=2).to(dtype).to(tl.float32)
    r = tl.arange(0, BLOCK_R)[:, None]
    row_ok = r < rows
    if MODE == 1:
        silu = (y1 / (1.0 + tl.exp(-y1))).to(dtype).to(tl.float32)
        tl.store(out_ptr + r * stride_out + n1[None, :], (silu * y2).to(dtype), mask=row_ok & (n1[None, :] < INTER))
    else:
        if HAS_BIAS:
            y1 = (y1 + tl.load(b_ptr + n1).to(tl.float32)[None, :]).to(dtype).to(tl.float32)
            y2 = (y2 + tl.load(b_ptr + n2).to(tl.float32)[None, :]).to(dtype).to(tl.float32)
        slot = tl.load(slot_ptr + r, mask=row_ok, other=0)
        position = tl.maximum(slot - tl.load(start_ptr + r, mask=row_ok, other=0), 0)
        if head < HEADS + KV_HEADS:  # q or k: rotate (x1, x2) -> (x1·c1 − x2·s1, x2·c2 + x1·s2)
            c1 = tl.load(cos_ptr + position * stride_t + col[None, :], mask=row_ok, other=0.0).to(tl.float32)
            s1 = tl.load(sin_ptr + position * stride_t + col[None, :], mask=row_ok, other=0.0).to(tl.float32)
            c2 = tl.load(cos_ptr + position * stride_t + col[None, :] + half, mask=row_ok, other=0.0).to(tl.float32)
            s2 = tl.load(sin_ptr + position * stride_t + col[None, :] + half, mask=row_ok, other=0.0).to(tl.float32)
            a = (y1 * c1).to(dtype).to(tl.float32) + (-y2 * s1).to(dtype).to(tl.float32)
            b = (y2 * c2).to(dtype).to(tl.float32) + (y1 * s2).to(dtype).to(tl.float32)
            y1, y2 = a, b
        if head < HEADS:
            tl.store(out_ptr + r * stride_out + n1[None, :], y1.to(dtype), mask=row_ok)
            tl.store(out_ptr + r * stride_out + n2[None, :], y2.to(dtype), mask=row_ok)
        else:
            kv = head - HEADS
            offset = r * stride_cr + (kv % KV_HEADS) * stride_ch + slot * stride_cs + col[None, :]
            if kv < KV_HEADS:
                tl.store(k_cache + offset, y1.to(dtype), mask=row_ok)
                tl.store(k_cache + offset + half, y2.to(dtype), mask=row_ok)
            else:
                tl.store(v_cache + offset, y1.to(dtype), mask=row_ok)
                tl.store(v_cache + offset + half, y2.to(dtype), mask=row_ok)


@triton.jit
def _attention_kernel(q_ptr, k_cache, v_cache, slot_ptr, start_ptr, part_acc, part_ml, stride_q,
                      stride_cr, stride_ch, stride_cs, scale, chunk,
                      KV_HEADS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                      BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr, SPLITS: tl.constexpr,
                      PRECISION: tl.constexpr):
    """Softmax attention of one row's GROUP query heads (sharing KV head g) over cache columns
    [split·chunk, (split+1)·chunk) ∩ [start, slot]: unnormalised partial results (acc, max, sum)."""
    rg = tl.program_id(0)
    split = tl.program_id(1)
    r = rg // KV_HEADS
    g = rg % KV_HEADS
    slot = tl.load(slot_ptr + r)
    lo = tl.maximum(split * chunk, tl.load(start_ptr + r))
    hi = tl.minimum((split + 1) * chunk, slot + 1)
    i = tl.arange(0, BLOCK_G)[:, None]
    d = tl.arange(0, HEAD_DIM)[None, :]
    q = tl.load(q_ptr + r * stride_q + (g * GROUP + i) * HEAD_DIM + d, mask=i < GROUP, other=0.0)
    m = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    total = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, HEAD_DIM), tl.float32)
    base = r * stride_cr + g * stride_ch
    s_off = tl.arange(0, BLOCK_S)
    for s0 in range(lo, hi, BLOCK_S):
        s = s0 + s_off
        ok = s < hi
        keys = tl.load(k_cache + base + s[:, None] * stride_cs + d, mask=ok[:, None], other=0.0)
        # Scores rounded to the dtype like the model's matmul output, then scaled in fp32.
        scores = tl.dot(q, tl.trans(keys), input_precision=PRECISION).to(q.dtype).to(tl.float32) * scale
        scores = tl.where(ok[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(scores - m_new[:, None])
        total = total * alpha + tl.sum(p, axis=1)
        values = tl.load(v_cache + base + s[:, None] * stride_cs + d, mask=ok[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(values.dtype), values, input_precision=PRECISION)
        m = m_new
    out = (rg * SPLITS + split) * BLOCK_G + tl.arange(0, BLOCK_G)
    tl.store(part_acc + out[:, None] * HEAD_DIM + d, acc)
    tl.store(part_ml + out * 2, m)
    tl.store(part_ml + out * 2 + 1, total)


@triton.jit
def _merge_kernel(part_acc, part_ml, out_ptr, stride_out, KV_HEADS: tl.constexpr, GROUP: tl.constexpr,
                  HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, SPLITS: tl.constexpr):
    """One query head's attention output from the SPLITS partial softmaxes."""
    pid = tl.program_id(0)  # (row, kv head, group member)
    rg = pid // GROUP
    i = pid % GROUP
    r = rg // KV_HEADS
    g = rg % KV_HEADS
    sp = tl.arange(0, SPLITS)
    idx = (rg * SPLITS + sp) * BLOCK_G + i
    m = tl.load(part_ml + idx * 2)
    total = tl.load(part_ml + idx * 2 + 1)
    m_all = tl.max(m, axis=0)
    w = tl.where(m > float("-inf"), tl.exp(m - m_all), 0.0)
    d = tl.arange(0, HEAD_DIM)
    acc = tl.load(part_acc + idx[:, None] * HEAD_DIM + d[None, :])
    att = tl.sum(acc * w[:, None], axis=0) / tl.sum(total * w, axis=0)
    tl.store(out_ptr + r * stride_out + (g * GROUP + i) * HEAD_DIM + d, att.to(out_ptr.dtype.element_ty))


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
        self.engine = engine
        dim = engine.head_dim
        if dim & (dim - 1) or dim < 16:
            raise ValueError(f"the Triton decode kernels need a power-of-two head_dim >= 16, got {dim}")
        self.hidden = engine.weights.layers[0].wqkv.shape[1]
        self.inter = engine.weights.layers[0].wd.shape[1]
        # (BLOCK_N, BLOCK_K, num_warps) per product; (splits, BLOCK_S, num_warps) for attention.
        self.tiles = dict(qkv=(4, 1024, 4), o=(8, 1024, 8), gate_up=(8, 1024, 8), down=(4, 1024, 8),
                          head=(16, 1024, 8), attention=(32, 64, 4))

    def _gemv(self, x, ln, w, out, residual: bool, tiles):
        block_n, block_k, warps = tiles
        rows, hidden = x.shape
        norm = ln is not None
        grid = (triton.cdiv(w.shape[0], block_n),)
        _gemv_kernel[grid](x, ln if norm else w, w, out, rows, hidden, w.shape[0], x.stride(0), w.stride(0),
                           out.stride(0), self.engine.eps, NORM=norm, RESIDUAL=residual, BLOCK_R=_pow2(rows),
                           BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_H=_pow2(hidden), num_warps=warps)

    def forward(self, ids: torch.Tensor, slots: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        engine = self.engine
        rows = ids.shape[0]
        if ids.shape[1] != 1 or rows > MAX_ROWS:
            raise ValueError(f"the Triton decode step takes R×1 ids with R <= {MAX_ROWS}, got {tuple(ids.shape)}")
        heads, kv_heads, dim = engine.num_heads, engine.num_kv_heads, engine.head_dim
        group = heads // kv_heads
        weights = engine.weights
        slot = slots[:, 0].contiguous()
        start = start.contiguous()
        x = torch.nn.functional.embedding(ids[:, 0], weights.top.embed)  # R×H, the residual stream
        q = torch.empty(rows, heads * dim, dtype=x.dtype, device=x.device)
        att = torch.empty_like(q)
        h = torch.empty(rows, self.inter, dtype=x.dtype, device=x.device)
        splits, block_s, att_warps = self.tiles["attention"]
        block_g = max(16, _pow2(group))
        part_acc = torch.empty(rows * kv_heads * splits * block_g, dim, dtype=torch.float32, device=x.device)
        part_ml = torch.empty(rows * kv_heads * splits * block_g, 2, dtype=torch.float32, device=x.device)
        length = engine.cache_length
        chunk = triton.cdiv(triton.cdiv(length, splits), block_s) * block_s  # whole tiles per split
        cos, sin = engine._cos, engine._sin
        block_r, block_h = _pow2(rows), _pow2(self.hidden)
        qkv_n, qkv_k, qkv_warps = self.tiles["qkv"]
        qkv_n = min(qkv_n, dim // 2)  # a program's pairs lie in one head (both powers of two)
        gu_n, gu_k, gu_warps = self.tiles["gate_up"]
        for layer, k_cache, v_cache in zip(weights.layers, engine.k_cache, engine.v_cache):
            bias = layer.bqkv
            _pair_gemv_kernel[((heads + 2 * kv_heads) * (dim // 2) // qkv_n,)](
                x, layer.ln1, layer.wqkv, bias if bias is not None else layer.wqkv, q, k_cache, v_cache, cos, sin,
                slot, start, rows, self.hidden, x.stride(0), layer.wqkv.stride(0), q.stride(0), engine.eps,
                k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), cos.stride(0),
                MODE=0, HAS_BIAS=bias is not None, HEADS=heads, KV_HEADS=kv_heads, HEAD_DIM=dim, INTER=self.inter,
                BLOCK_R=block_r, BLOCK_N=qkv_n, BLOCK_K=qkv_k, BLOCK_H=block_h, num_warps=qkv_warps)
            _attention_kernel[(rows * kv_heads, splits)](
                q, k_cache, v_cache, slot, start, part_acc, part_ml, q.stride(0),
                k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), dim**-0.5, chunk,
                KV_HEADS=kv_heads, GROUP=group, HEAD_DIM=dim, BLOCK_G=block_g, BLOCK_S=block_s, SPLITS=splits,
                PRECISION="ieee" if x.dtype == torch.float32 else "tf32", num_warps=att_warps)
            _merge_kernel[(rows * heads,)](part_acc, part_ml, att, att.stride(0), KV_HEADS=kv_heads, GROUP=group,
                                           HEAD_DIM=dim, BLOCK_G=block_g, SPLITS=splits)
            self._gemv(att, None, layer.wo, x, True, self.tiles["o"])
            _pair_gemv_kernel[(triton.cdiv(self.inter, gu_n),)](
                x, layer.ln2, layer.wgu, layer.wgu, h, k_cache, v_cache, cos, sin, slot, start,
                rows, self.hidden, x.stride(0), layer.wgu.stride(0), h.stride(0), engine.eps,
                0, 0, 0, 0, MODE=1, HAS_BIAS=False, HEADS=heads, KV_HEADS=kv_heads, HEAD_DIM=dim, INTER=self.inter,
                BLOCK_R=block_r, BLOCK_N=gu_n, BLOCK_K=gu_k, BLOCK_H=block_h, num_warps=gu_warps)
            self._gemv(h, None, layer.wd, x, True, self.tiles["down"])
        logits = torch.empty(rows, weights.top.head.shape[0], dtype=torch.float32, device=x.device)
        self._gemv(x, weights.top.final_norm, weights.top.head, logits, False, self.tiles["head"])
        return logits[:, None]
