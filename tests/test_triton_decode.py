"""The Triton decode step against the engine's torch step.

Runs on a CUDA machine, or on a CPU in Triton's interpreter (`TRITON_INTERPRET=1`, which `.ci/run`
sets in a separate environment with triton installed). The interpreter computes bf16 dot products
wrongly (it multiplies the raw bits), so on the CPU only fp32 is checked.
"""

import os

import pytest
import torch
from sampling_helpers import COND, OFFSET, UNCOND

from simplear.model import build_model
from simplear.sampling.config import SamplingConfig
from simplear.sampling.engine import FastEngine
from simplear.sampling.reference import reference_sample

pytest.importorskip("triton")
CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="needs a CUDA device or TRITON_INTERPRET=1")
DEVICE = "cuda" if CUDA else "cpu"
CODEBOOK = 48
SMALL_TILES = dict(qkv=(4, 32, 4), o=(8, 32, 4), gate_up=(8, 32, 4), down=(4, 32, 4), head=(16, 32, 4),
                   attention=(4, 16, 4))


def _model(dtype=torch.float32, seed: int = 0, **overrides):
    # The tiny preset widened to head_dim 16 (the attention kernel's dot products need >= 16).
    shape = dict(hidden_size=64, intermediate_size=96, initializer_range=0.15) | overrides
    model = build_model("tiny", OFFSET + CODEBOOK, seed=seed, **shape)
    return model.to(device=DEVICE, dtype=dtype).eval()


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16] if CUDA else [torch.float32])
@pytest.mark.parametrize("rows", [2, 8])
@torch.inference_mode()
def test_triton_step_matches_the_torch_step(dtype, rows):
    model = _model(dtype, seed=rows)
    mine = FastEngine(model, OFFSET, CODEBOOK, cuda_graphs=False, kernels="triton")
    theirs = FastEngine(model, OFFSET, CODEBOOK, cuda_graphs=False, kernels="torch")
    mine._triton.tiles.update(SMALL_TILES)  # several tiles and splits even at these sizes
    gen = torch.Generator().manual_seed(rows)
    length = 37
    prefix = torch.randint(0, OFFSET + CODEBOOK, (rows, length), generator=gen).to(DEVICE)
    start = torch.tensor([i % 4 for i in range(rows)], device=DEVICE)  # left padding on some rows
    for engine in (mine, theirs):
        engine.allocate(rows, length + 4)
        engine.forward(prefix, torch.arange(length, device=DEVICE)[None].expand(rows, length), start, kv_len=length)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    for at in (length, length + 1, length + 3):
        ids = torch.randint(OFFSET, OFFSET + CODEBOOK, (rows, 1), generator=gen).to(DEVICE)
        slots = torch.full((rows, 1), at, device=DEVICE)
        ref = theirs._forward(theirs.weights, ids, slots, start, theirs.cache_length).float()
        got = mine._triton.forward(ids, slots, start)
        assert got.shape == ref.shape and got.dtype == torch.float32
        assert _rel(got, ref) < tolerance
        for layer in range(len(mine.k_cache)):  # the new keys and values went to the slot
            assert _rel(mine.k_cache[layer][:, :, at], theirs.k_cache[layer][:, :, at]) < tolerance
            assert _rel(mine.v_cache[layer][:, :, at], theirs.v_cache[layer][:, :, at]) < tolerance
            theirs.k_cache[layer][:, :, at] = mine.k_cache[layer][:, :, at]
            theirs.v_cache[layer][:, :, at] = mine.v_cache[layer][:, :, at]


@torch.inference_mode()
def test_triton_step_takes_a_model_without_qkv_bias():
    model = _model()
    for layer in model.model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            proj.bias = None
    mine = FastEngine(model, OFFSET, CODEBOOK, cuda_graphs=False, kernels="triton")
    theirs = FastEngine(model, OFFSET, CODEBOOK, cuda_graphs=False, kernels="torch")
    assert mine.weights.layers[0].bqkv is None
    rows = 2
    for engine in (mine, theirs):
        engine.allocate(rows, 8)
    ids = torch.tensor([[OFFSET + 1], [OFFSET + 2]], device=DEVICE)
    slots = torch.zeros(rows, 1, dtype=torch.long, device=DEVICE)
    start = torch.zeros(rows, dtype=torch.long, device=DEVICE)
    ref = theirs._forward(theirs.weights, ids, slots, start, theirs.cache_length).float()
    assert _rel(mine._triton.forward(ids, slots, start), ref) < 1e-5


def test_triton_step_rejects_what_it_cannot_take():
    engine = FastEngine(_model(), OFFSET, CODEBOOK, cuda_graphs=False, kernels="triton")
    engine.allocate(10, 8)
    ids = torch.zeros(10, 1, dtype=torch.long, device=DEVICE)
    with pytest.raises(ValueError, match="R <= 8"):
        engine._triton.forward(ids, torch.zeros(10, 1, dtype=torch.long, device=DEVICE),
                               torch.zeros(10, dtype=torch.long, device=DEVICE))
    assert engine.uses_triton(8) and not engine.uses_triton(10)


@pytest.mark.skipif(not CUDA, reason="the engine replays the Triton step in a CUDA graph")
def test_triton_engine_samples_what_the_reference_samples():
    model = _model(seed=5)
    engine = FastEngine(model, OFFSET, CODEBOOK, kernels="triton")
    assert engine.cuda_graphs and engine.kernels == "triton"
    common = dict(visual_offset=OFFSET, codebook_size=CODEBOOK, num_tokens=20)
    greedy = SamplingConfig(top_k=1, cfg_scale=3.0)
    ref = reference_sample(model, COND, UNCOND, config=greedy, **common)
    assert torch.equal(engine.sample(COND, UNCOND, num_tokens=20, config=greedy).codes, ref.codes)
    for config in (SamplingConfig(cfg_scale=3.0, temperature=0.9), SamplingConfig(cfg_scale=1.0, top_p=0.8)):
        gens = [torch.Generator(device="cuda").manual_seed(s) for s in (3, 4)]
        ref = reference_sample(model, COND, UNCOND, config=config, generator=gens, **common)
        gens = [torch.Generator(device="cuda").manual_seed(s) for s in (3, 4)]
        fast = engine.sample(COND, UNCOND, num_tokens=20, config=config, generator=gens)
        assert torch.equal(fast.codes, ref.codes), config
