"""The fast engine: a lean decode loop over the weights of a stock `Qwen2ForCausalLM`.

What makes it fast (after gpt-fast), none of which changes the computed function:
- a preallocated (static) KV cache written in place at explicit slots, so no tensor grows;
- fused projections (q|k|v and gate|up concatenated once), one mask per forward shared by all
  layers, grouped-query attention without repeating the key/value heads;
- a visual-only output head: the `lm_head` rows of the visual ids (a view, no copy), so the
  per-step head costs `codebook_size` rows instead of the whole vocabulary and nothing needs
  clamping;
- CFG as one doubled batch; on CUDA the whole decoding step (the one-token forward, CFG,
  temperature, top-k/top-p and the draw from uniform numbers drawn outside in the reference's
  order) is captured once as a CUDA graph (of the `torch.compile`d step with `compile`) and
  replayed, so a step costs one launch instead of hundreds;
- on CUDA with bf16 weights and 1-4 rows the step is fused Triton kernels instead
  (`triton_decode.py`: six per layer, plus the head and a fused draw), replayed in the same graph;
- `compile=True` on CPU: the step compiled with its weights frozen as constants, matrix products
  autotuned between inductor's C++ GEMM kernels and BLAS, and attention as fused reductions; the
  sampling (CFG, temperature, top-k/top-p, the draw) runs inside the same graph, with the uniform
  numbers drawn outside from the caller's generators, so equal seeds still give equal codes.

The engine moves token ids only; it knows nothing about text. `forward(ids, slots, start)` is
the one primitive (prefill, one-token decode and Jacobi's ragged blocks all use it); the weights
are a snapshot taken at construction (call `refresh()` after changing the model).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import time
import types
import weakref
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from simplear.sampling.batch import check_vocab, make_prompt_batch
from simplear.sampling.config import SamplingConfig, check_kernels
from simplear.sampling.logits import Generators, draw, invert_cdf, probs_from_logits, split_cfg, uniform
from simplear.sampling.result import SampleResult


class _Tensors(torch.nn.Module):
    """Named tensors held as frozen (no-grad) parameters of a module.

    The engine's weight snapshot lives in modules so that `torch.compile` sees it as a model's
    weights: with inductor's `freezing` it folds them in as constants and prepacks them for its
    CPU GEMM kernels.
    """

    def __init__(self, **tensors: torch.Tensor | None):
        super().__init__()
        for name, tensor in tensors.items():
            param = None if tensor is None else torch.nn.Parameter(tensor, requires_grad=False)
            self.register_parameter(name, param)


class _Weights(torch.nn.Module):
    def __init__(self, embed, final_norm, head, layers: list[_Tensors]):
        super().__init__()
        self.top = _Tensors(embed=embed, final_norm=final_norm, head=head)
        self.layers = torch.nn.ModuleList(layers)


def _drop_compiled_entries(code: types.CodeType) -> None:
    reset_code = getattr(torch._dynamo, "reset_code", None)
    if reset_code is not None:
        reset_code(code)


class _CompiledStep(torch.nn.Module):
    """The one-token decode step as a module over the weight snapshot (what `torch.compile` wraps)."""

    def __init__(self, engine: FastEngine):
        super().__init__()
        self.weights = engine.weights
        self._engine = (engine,)  # a tuple: not registered as a submodule
        # Dynamo keeps its compiled entries on the code object of the function it compiles. With
        # one shared `forward` code, every engine and every `refresh()` (new frozen weights) would
        # add entries to the same list until dynamo's recompile limit (8) stopped compiling. A
        # copy of the code per instance gives each compiled step a list of its own.
        code = type(self).forward.__code__.replace()
        self.forward = types.MethodType(types.FunctionType(code, globals(), "forward"), self)
        # Those entries hold the weights frozen into them as constants and outlive this module (one
        # model copy per refresh or per dropped engine): drop them with it. `release()` does it now.
        self.release = weakref.finalize(self, _drop_compiled_entries, code)
        self.release.atexit = False

    def forward(self, ids, slots, start):
        engine = self._engine[0]
        return engine._forward(self.weights, ids, slots, start, engine.cache_length).float()


class _Knobs:
    """A `SamplingConfig` as the compiled decode step reads it: the fields that shape the graph as
    Python values, the numbers as elements of a tensor (a plain class: dynamo traces it)."""

    def __init__(self, structure: tuple, values: torch.Tensor):
        self.uses_cfg, self.greedy, self.top_k, filters_top_p = structure
        self.cfg_scale, self.temperature = values[0], values[1]
        self.top_p = values[2] if filters_top_p else 1.0


class _CompiledDecode(_CompiledStep):
    """One whole decoding step: the previous codes in, the next codes out.

    The step, CFG, temperature/top-k/top-p and the draw (`invert_cdf` with uniform numbers drawn
    outside, from the same generators in the same order as `draw`) in one compiled graph, so the
    sampling ops between steps cost no Python dispatch. `structure` (CFG on, greedy, top-k, top-p
    on) shapes the graph; the numbers (CFG scale, temperature, top-p) come in as a tensor, so new
    values reuse the compiled step.
    """

    def __init__(self, engine: FastEngine, structure: tuple, draw: bool = True):
        super().__init__(engine)
        self.structure = structure
        self.draw = draw  # False: return the probabilities (the caller draws)

    def forward(self, prev, slots, start, u, values):
        engine = self._engine[0]
        ids = prev + engine.visual_offset
        if self.structure[0]:  # CFG
            ids = torch.cat([ids, ids])
        if engine.uses_triton(ids.shape[0]):
            logits = engine._triton.forward(ids[:, None], slots, start)[:, -1]
            if self.draw and not any(self.structure[1:]):
                # Plain sampling (not greedy, no top-k, no top-p): CFG, temperature and the draw fused.
                from simplear.sampling.triton_decode import sample_plain

                return sample_plain(logits, u, values, self.structure[0])
        else:
            logits = engine._forward(self.weights, ids[:, None], slots, start, engine.cache_length)[:, -1].float()
        config = _Knobs(self.structure, values)
        probs = probs_from_logits(split_cfg(logits, config), config)
        return invert_cdf(probs, u) if self.draw else probs


def _draw_after(probs_step: Callable, prev, slots, start, u, values) -> torch.Tensor:
    # On CUDA the draw runs eagerly after the compiled step (inside the same CUDA graph): inductor
    # (torch 2.11) fails to generate its split cumulative sum over 64,000 codes for 16 rows.
    return invert_cdf(probs_step(prev, slots, start, u, values), u)


# Inductor options for the compiled step on CPU: weights folded in as constants (`freezing`) and
# the matrix products autotuned between inductor's own C++ GEMM (weights prepacked once) and ATen's
# BLAS call. At decode sizes (2 CFG rows), for the default model's 21 matrices, the C++ kernels took
# 1.3 ms against 3.3 ms for BLAS's x @ Wᵀ (1.6 ms for the eager path's W @ xᵀ) on the 2-core dev
# box; autotuning costs tens of seconds once per step shape.
_CPU_COMPILE_OPTIONS = {
    "freezing": True,
    "max_autotune": True,
    "max_autotune_gemm_backends": "CPP,ATEN",
    "autotune_num_choices_displayed": 0,  # no autotuning tables on stderr
    "max_autotune_report_choices_stats": False,
}


def _check_cpp_compiler() -> None:
    """torch.compile on CPU builds C++ kernels: fail at construction, clearly, when it cannot."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # a torch without this helper: let torch.compile report it
        return
    try:
        get_cpp_compiler()
    except Exception as err:
        raise ValueError(
            "compile=True on CPU needs a C++ compiler for torch.compile (e.g. `apt-get install g++`, "
            f"or set CXX); run without compile instead ({err})"
        ) from err


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Same arithmetic as Qwen2RMSNorm (float32 statistics, cast back, then scale).
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _linear_small(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear` for a few rows on CPU, computed as (W @ xᵀ)ᵀ.

    For 1-8 rows the CPU BLAS reads the weight as a plain matrix-vector product this way instead
    of packing it for a GEMM: measured 1.7-2x faster per step on the 2-core dev box (cold cache).
    """
    flat = x.reshape(-1, x.shape[-1])
    out = torch.matmul(weight, flat.t()).t()
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class FastEngine:
    """Static-cache sampler for one model and one visual range (`visual_offset`, `codebook_size`).

    compile: wrap the one-token step in `torch.compile` (CPU or CUDA). The first step of each
        shape compiles (on CPU with GEMM autotuning: tens of seconds); after the model's weights
        change, `refresh()` makes the next step compile again (the weights are frozen into it).
    cuda_graphs: capture the one-token step as a CUDA graph (default: on when the model is on CUDA).
    kernels: "torch" (the step as torch ops), "triton" (on CUDA, the one-token step of up to
        `triton_decode.ENGINE_ROWS` rows as fused Triton kernels, `simplear.sampling.triton_decode`,
        not torch-compiled; larger batches, prefill and Jacobi's blocks stay on torch) or "auto"
        (triton where it applies: CUDA, bf16 weights, Triton importable; fp32, tested but not
        timed on a GPU, and fp16, not run on one, take the kernels only when asked for).
    """

    def __init__(
        self,
        model,
        visual_offset: int,
        codebook_size: int,
        *,
        compile: bool = False,
        cuda_graphs: bool | None = None,
        kernels: str = "auto",
    ):
        cfg = model.config
        if getattr(cfg, "use_sliding_window", False):
            raise ValueError("FastEngine does not implement sliding-window attention; use reference_sample")
        check_vocab(model, visual_offset, codebook_size, 1)
        self.model = model
        self.visual_offset = int(visual_offset)
        self.codebook_size = int(codebook_size)
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.compile = compile
        self.cuda_graphs = (self.device.type == "cuda") if cuda_graphs is None else bool(cuda_graphs)
        if self.cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs=True needs the model on a CUDA device")
        if compile and self.device.type == "cpu":
            _check_cpp_compiler()
        self.kernels = self._choose_kernels(kernels)
        self._triton = None
        self._cos = self._sin = None
        self._cache_key = None
        self._cache_pool: dict[tuple, tuple] = {}  # (rows, length) -> its KV cache (CPU compile)
        self.refresh()

    def _choose_kernels(self, kernels: str) -> str:
        check_kernels(kernels)
        interpreted = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (tests)
        usable = (self.device.type == "cuda" or interpreted) and importlib.util.find_spec("triton") is not None
        if kernels == "triton" and not usable:
            raise ValueError("kernels='triton' needs the model on a CUDA device and the triton package; "
                             "use kernels='torch'")
        if kernels == "auto":
            on_gpu = self.device.type == "cuda"  # the interpreter is for tests that ask for "triton"
            return "triton" if usable and on_gpu and self.dtype == torch.bfloat16 else "torch"
        return kernels

    def uses_triton(self, rows: int) -> bool:
        """Whether a one-token step of `rows` rows runs on the Triton kernels."""
        if self.kernels != "triton":
            return False  # without importing triton, which a CPU-only install may lack
        from simplear.sampling.triton_decode import ENGINE_ROWS

        return rows <= ENGINE_ROWS

    # -- weights -------------------------------------------------------------------------
    @torch.no_grad()
    def refresh(self) -> None:
        """(Re)take the weight snapshot; needed only after the model's weights changed."""
        inner = self.model.model
        # The visual rows of the output head: a contiguous view, index i is code i.
        head = self.model.get_output_embeddings().weight
        layers = []
        for layer in inner.layers:
            att, mlp = layer.self_attn, layer.mlp
            biases = [att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]
            layers.append(
                _Tensors(
                    ln1=layer.input_layernorm.weight.detach(),
                    wqkv=torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]),
                    bqkv=None if any(b is None for b in biases) else torch.cat(biases),
                    wo=att.o_proj.weight.detach(),
                    ln2=layer.post_attention_layernorm.weight.detach(),
                    wgu=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
                    wd=mlp.down_proj.weight.detach(),
                )
            )
        head = head[self.visual_offset : self.visual_offset + self.codebook_size].detach()
        if self.compile and self.device.type == "cpu":
            # Inductor's C++ GEMM template reads a frozen weight that starts inside its storage (a
            # row slice) from the storage's start: wrong logits (torch 2.13). Give it its own copy.
            head = head.clone()
        self.weights = _Weights(
            embed=inner.embed_tokens.weight.detach(),
            final_norm=inner.norm.weight.detach(),
            head=head,
            layers=layers,
        )
        # A compiled step (frozen weights) or a captured graph holds the old weights: rebuild lazily.
        for compiled in [getattr(self, "_compiled", None), *getattr(self, "_decoders", {}).values()]:
            if compiled is not None:
                getattr(compiled, "_orig_mod", compiled).release()
        if self.kernels == "triton":
            from simplear.sampling.triton_decode import TritonDecoder

            self._triton = TritonDecoder(self)
        self._compiled = None
        self._decoders: dict[tuple, Callable] = {}  # (sampling structure, triton) -> decode step (graphed on CUDA)
        self._compiled_shapes: set[tuple] = set()  # (module, shapes) the compiled steps have seen
        self._graphs = {}

    @torch.no_grad()
    def _rope_table(self, length: int) -> None:
        if self._cos is not None and self._cos.shape[0] >= length:
            return
        # Use the model's own rotary module so any RoPE variant in its config is honoured.
        positions = torch.arange(length, device=self.device)[None]
        dummy = torch.empty(0, device=self.device, dtype=self.dtype)
        cos, sin = self.model.model.rotary_emb(dummy, positions)
        self._cos, self._sin = cos[0].contiguous(), sin[0].contiguous()

    # -- cache ---------------------------------------------------------------------------
    def allocate(self, rows: int, length: int) -> None:
        """Preallocate the KV cache for `rows` sequences of up to `length` tokens."""
        if self._cache_key == (rows, length):
            return
        self._graphs = {}
        key = (rows, length)
        if self.compile and self.device.type == "cpu":
            # A compiled step keeps reading the cache tensors it was compiled with, and known step
            # shapes skip the guards that would notice new ones: a cache size seen before must get
            # its very tensors back (they are alive anyway, held by the compiled step).
            if key not in self._cache_pool:
                self._cache_pool[key] = self._new_cache(rows, length)
            self.k_cache, self.v_cache = self._cache_pool[key]
        else:
            self.k_cache = self.v_cache = None  # free the old cache before making the new one
            self.k_cache, self.v_cache = self._new_cache(rows, length)
        self._cache_key = key
        self._rope_table(length)

    def _new_cache(self, rows: int, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        shape = (rows, self.num_kv_heads, length, self.head_dim)
        layers = range(len(self.weights.layers))
        return ([torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in layers],
                [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in layers])

    @property
    def cache_length(self) -> int:
        """Columns of the allocated KV cache."""
        return self._cache_key[1]

    # -- the one primitive ---------------------------------------------------------------
    def forward(self, ids: torch.Tensor, slots: torch.Tensor, start: torch.Tensor, kv_len: int | None = None):
        """Visual logits (R×T×K, float32) of tokens `ids` (R×T) written at cache `slots` (R×T).

        Row r's real tokens begin at cache column `start[r]`; its position id is `slot - start`.
        Attention covers cache columns [start[r], slot] of the row (and the token itself, so
        padding rows never see an empty set). `kv_len` limits attention to the first columns.
        """
        return self._forward(self.weights, ids, slots, start, kv_len or self._cache_key[1]).float()

    def _forward(self, weights: _Weights, ids, slots, start, kv_len: int):
        rows, width = ids.shape
        heads, kv_heads, dim = self.num_heads, self.num_kv_heads, self.head_dim
        # Eager CPU decoding: the BLAS matrix-vector form. Under torch.compile: plain `F.linear`,
        # the pattern inductor's GEMM templates recognise (weight as the packable operand).
        compiling = torch.compiler.is_compiling()
        on_cpu = self.device.type == "cpu"
        linear = _linear_small if (on_cpu and rows * width <= 8 and not compiling) else F.linear
        # Compiled on CPU, attention as broadcast-multiply-reduce: inductor fuses each into one
        # pass over the cache, where batched matmuls made it copy and repack the whole cache.
        fused_attention = compiling and on_cpu
        group = heads // kv_heads
        x = F.embedding(ids, weights.top.embed)
        positions = (slots - start[:, None]).clamp(min=0)
        cos, sin = self._cos[positions][:, None], self._sin[positions][:, None]  # R×1×T×D
        columns = torch.arange(kv_len, device=ids.device)
        own = columns == slots[..., None]
        visible = ((columns <= slots[..., None]) & (columns >= start[:, None, None])) | own  # R×T×S
        # One additive mask for all layers, broadcast over KV heads and query groups.
        bias = torch.zeros(visible.shape, dtype=torch.float32, device=ids.device)
        bias = bias.masked_fill(~visible, float("-inf"))[:, None, None]  # R×1×1×T×S
        scale = dim**-0.5
        row_index = torch.arange(rows, device=ids.device)[:, None]
        for layer, k_cache, v_cache in zip(weights.layers, self.k_cache, self.v_cache):
            h = _rms(x, layer.ln1, self.eps)
            q, k, v = linear(h, layer.wqkv, layer.bqkv).split([heads * dim, kv_heads * dim, kv_heads * dim], -1)
            q = _rope(q.view(rows, width, heads, dim).transpose(1, 2), cos, sin)
            k = _rope(k.view(rows, width, kv_heads, dim).transpose(1, 2), cos, sin)
            k_cache[row_index, :, slots] = k.transpose(1, 2)
            v_cache[row_index, :, slots] = v.view(rows, width, kv_heads, dim)
            # Attention written out as two batched matmuls: the `group` query heads of a KV head
            # are extra query rows, so keys/values are read once and never repeated. For decoding
            # (few queries, long cache) matmuls parallelise over the cache length, which fused
            # attention kernels do not at batch 1.
            q = q.reshape(rows, kv_heads, group * width, dim)
            keys, values = k_cache[:, :, :kv_len], v_cache[:, :, :kv_len]
            if fused_attention:
                scores = (q[:, :, :, None] * keys[:, :, None]).sum(-1).float() * scale
            else:
                scores = torch.matmul(q, keys.transpose(-1, -2)).float() * scale
            scores = (scores.view(rows, kv_heads, group, width, kv_len) + bias).softmax(dim=-1)
            scores = scores.view(rows, kv_heads, group * width, kv_len).to(x.dtype)
            if fused_attention:
                att = (scores[..., None] * values[:, :, None]).sum(-2)
            else:
                att = torch.matmul(scores, values)  # R×KV×(G·T)×D
            att = att.reshape(rows, heads, width, dim).transpose(1, 2).reshape(rows, width, heads * dim)
            x = x + linear(att, layer.wo)
            gate, up = linear(_rms(x, layer.ln2, self.eps), layer.wgu).chunk(2, dim=-1)
            x = x + linear(F.silu(gate) * up, layer.wd)
        return linear(_rms(x, weights.top.final_norm, self.eps), weights.top.head)

    def _step(self, ids, slots, start):
        # A decode step over the whole static cache (fixed shapes: compilable, graphable).
        if not self.compile:
            return self._forward(self.weights, ids, slots, start, self.cache_length).float()
        if self._compiled is None:
            self._compiled = torch.compile(_CompiledStep(self).eval(), dynamic=False)
        if self.device.type != "cpu":
            return self._compiled(ids, slots, start)
        return self._call_compiled_cpu(self._compiled, ids, slots, start)

    def _call_compiled_cpu(self, compiled, ids, *args):
        shape = (id(compiled), tuple(ids.shape), self._cache_key, self._cos.shape[0])
        if shape in self._compiled_shapes:
            # Everything dynamo's guards check per call is fixed for a compiled shape (the shape
            # key above holds the rest; `refresh()` makes a new compiled step), so evaluate only
            # the guards that tell this code's compiled entries apart: a full check costs about
            # 6% of a CPU step.
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                return compiled(ids, *args)
        # Inductor reads `freezing` from its global config (passing it in `torch.compile`'s
        # options has no effect in torch 2.13), so set the options around the call that compiles:
        # the first one of each shape. Not around every call: a config patch costs 50-80 µs
        # (3-5% of a step).
        import torch._inductor.config as inductor_config

        with inductor_config.patch(_CPU_COMPILE_OPTIONS):
            out = compiled(ids, *args)
        self._compiled_shapes.add(shape)
        return out

    def _decode_step(self, prev, slots, start, u, values, config: SamplingConfig) -> torch.Tensor:
        """The next codes (B) after codes `prev` (B), sampled in one graph: the compiled step on
        CPU, a replayed CUDA graph (of the compiled step with `compile`) on CUDA."""
        structure = (config.uses_cfg, config.greedy, config.top_k, config.top_p < 1.0)
        triton = self.uses_triton(prev.shape[0] * (2 if config.uses_cfg else 1))
        decoder = self._decoders.get((structure, triton))
        if decoder is None:
            on_cpu = self.device.type == "cpu"
            decoder = _CompiledDecode(self, structure, draw=on_cpu or triton).eval()
            if self.compile and not triton:  # the Triton step is compiled already
                decoder = torch.compile(decoder, dynamic=False)
            self._decoders[(structure, triton)] = decoder
        if self.cuda_graphs:
            step = decoder if triton else functools.partial(_draw_after, decoder)
            return self._replay((structure, tuple(prev.shape)), step, prev, slots, start, u, values)
        return self._call_compiled_cpu(decoder, prev, slots, start, u, values)

    # -- steps ---------------------------------------------------------------------------
    def step(self, ids: torch.Tensor, slots: torch.Tensor, start: torch.Tensor, kv_len: int) -> torch.Tensor:
        """`forward` for decoding (R×T tokens with T fixed per loop): a replayed CUDA graph per T
        on CUDA, the compiled step with `compile`, else eager attention over `kv_len` columns."""
        if self.cuda_graphs:
            return self._replay(tuple(ids.shape), self._step, ids, slots, start)
        if self.compile:
            return self._step(ids, slots, start)
        return self._forward(self.weights, ids, slots, start, kv_len).float()

    def _replay(self, key, fn: Callable, *args: torch.Tensor) -> torch.Tensor:
        """`fn(*args)` as a CUDA graph, captured on the first call of each `key` (shapes), then
        replayed with the arguments copied into the graph's own input tensors."""
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(fn, args)
        static, graph, out = entry
        for mine, given in zip(static, args):
            if mine.data_ptr() != given.data_ptr():
                mine.copy_(given)
        graph.replay()
        return out

    def _capture(self, fn: Callable, args: tuple) -> tuple:
        # Warm up on a side stream (as torch.cuda.graphs requires), then record the step once.
        # The warm-up writes this very step's keys/values, which the replay rewrites identically.
        static = tuple(a.clone() for a in args)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(*static)
        return static, graph, out

    @torch.inference_mode()
    def sample(
        self,
        cond_ids: Sequence | torch.Tensor,
        uncond_ids: Sequence | torch.Tensor | None,
        *,
        num_tokens: int,
        generator: Generators = None,
        config: SamplingConfig | None = None,
        pad_id: int = 0,
        progress: Callable[[torch.Tensor, int, int], None] | None = None,
    ) -> SampleResult:
        """Same contract and same random-number use as `reference_sample`, so equal seeds agree."""
        config = config or SamplingConfig()
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        batch = make_prompt_batch(cond_ids, uncond_ids, config, device=self.device, pad_id=pad_id)
        rows, length = batch.rows, batch.length
        self.allocate(rows, length + num_tokens)
        codes = torch.empty((batch.num_images, num_tokens), dtype=torch.long, device=self.device)
        started = time.perf_counter()

        # 1. Prefill every prompt column at once (eager: its shape changes with the prompt).
        slots = torch.arange(length, device=self.device)[None].expand(rows, length)
        logits = self.forward(batch.ids, slots, batch.start, kv_len=length)[:, -1]
        slot = torch.full((rows, 1), length, dtype=torch.long, device=self.device)
        fused = self.cuda_graphs or (self.compile and self.device.type == "cpu")
        decode = self._decode_fused if fused else self._decode
        decode(logits, codes, slot, batch.start, length, generator, config, progress)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        stats = {
            "sampler": "engine",
            "tokens": num_tokens,
            "forward_passes": num_tokens,
            "tokens_per_forward": 1.0,
            "seconds": time.perf_counter() - started,
        }
        return SampleResult(codes, stats)

    def _decode(self, logits, codes, slot, start, length, generator, config, progress) -> None:
        # Fill `codes` (B×N) from the prefill's last logits, one token per row per step.
        num_tokens = codes.shape[1]
        for step in range(num_tokens):
            # CFG, filters and the draw: the same pure functions as the reference sampler.
            probs = probs_from_logits(split_cfg(logits, config), config)
            codes[:, step] = draw(probs, generator)
            if progress is not None:
                progress(codes, step + 1, num_tokens)
            if step + 1 == num_tokens:
                break
            next_ids = codes[:, step] + self.visual_offset
            if config.uses_cfg:
                next_ids = torch.cat([next_ids, next_ids])
            # One token per row at the next cache column.
            logits = self.step(next_ids[:, None], slot, start, length + step + 1)[:, -1]
            slot = slot + 1

    def _decode_fused(self, logits, codes, slot, start, length, generator, config, progress) -> None:
        # `_decode` with each step's sampling inside the graph (CPU compile, CUDA graphs): the same
        # uniform numbers from the same generators in the same order as `draw` takes them.
        # The codes go in as their own contiguous tensor, not as a column view of `codes`: known
        # step shapes skip dynamo's guards, so an input's strides must not depend on the length.
        num_images, num_tokens = codes.shape
        values = torch.tensor([config.cfg_scale, config.temperature, config.top_p], dtype=torch.float32,
                              device=self.device)
        prev = draw(probs_from_logits(split_cfg(logits, config), config), generator)
        codes[:, 0] = prev
        for step in range(1, num_tokens + 1):
            if progress is not None:
                progress(codes, step, num_tokens)
            if step == num_tokens:
                break
            u = uniform((num_images, 1), generator, self.device)
            prev = self._decode_step(prev, slot, start, u, values, config)
            codes[:, step] = prev
            slot += 1
