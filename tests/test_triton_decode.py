"""The Triton decode step against the engine's torch step.

Runs on a CUDA machine, or on a CPU in Triton's interpreter (`TRITON_INTERPRET=1`, which `.ci/run`
sets in a separate environment with triton installed). The interpreter computes bf16 dot products
wrongly (it multiplies the raw bits), so on the CPU only fp32 is checked.
"""

import copy
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

def small_tiles(kind: str) -> dict:
    """Tiles far smaller than the layers: several K tiles, programs and attention splits each."""
    tile = (kind, 16, 32, 4, 2)
    return dict(qkv=tile, o=tile, gate_up=tile, down=tile, head=tile, attention=(4, 16, 4))


def _model(dtype=torch.float32, seed: int = 0, **overrides):
    # The tiny preset widened to head_dim 32 (the attention kernel's dot products over half a head
    # need >= 16), with an MLP width that is no multiple of the tiles.
    shape = dict(hidden_size=128, intermediate_size=200, initializer_range=0.15) | overrides
    model = build_model("tiny", OFFSET + CODEBOOK, seed=seed, **shape)
    return model.to(device=DEVICE, dtype=dtype).eval()


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16] if CUDA else [torch.float32])
@pytest.mark.parametrize("rows,kind", [(2, "fma"), (3, "fma"), (2, "dot"), (6, "dot"), (16, "dot")])
@torch.inference_mode()
def test_triton_step_matches_the_torch_step(dtype, rows, kind):
    model = _model(dtype, seed=rows)
    mine = FastEngine(model, OFFSET, CODEBOOK, cuda_graphs=False, kernels="triton")
    theirs = FastEngine(model, OFFSET, CODEBOOK, cuda_graphs=False, kernels="torch")
    # In bf16 two kernels' sums in another order differ by rounding, compounded over the layers: the
    # Triton step must be as close to the fp32 computation over the same weights as torch's is.
    exact = FastEngine(copy.deepcopy(model).float(), OFFSET, CODEBOOK, cuda_graphs=False, kernels="torch")
    mine._triton.tiles.update(small_tiles(kind))
    gen = torch.Generator().manual_seed(rows)
    length = 37
    prefix = torch.randint(0, OFFSET + CODEBOOK, (rows, length), generator=gen).to(DEVICE)
    start = torch.tensor([i % 4 for i in range(rows)], device=DEVICE)  # left padding on some rows
    for engine in (mine, theirs, exact):
        engine.allocate(rows, length + 4)
        engine.forward(prefix, torch.arange(length, device=DEVICE)[None].expand(rows, length), start, kv_len=length)
    for at in (length, length + 1, length + 3):
        ids = torch.randint(OFFSET, OFFSET + CODEBOOK, (rows, 1), generator=gen).to(DEVICE)
        slots = torch.full((rows, 1), at, device=DEVICE)
        ref = theirs._forward(theirs.weights, ids, slots, start, theirs.cache_length).float()
        truth = exact._forward(exact.weights, ids, slots, start, exact.cache_length)
        got = mine._triton.forward(ids, slots, start)
        assert got.shape == ref.shape and got.dtype == torch.float32
        tolerance = 1e-5 if dtype == torch.float32 else 1.5 * _rel(ref, truth)
        assert _rel(got, truth) < tolerance
        for layer in range(len(mine.k_cache)):  # the new keys and values went to the slot
            for name in ("k_cache", "v_cache"):
                got_kv, ref_kv = getattr(mine, name)[layer][:, :, at], getattr(theirs, name)[layer][:, :, at]
                truth_kv = getattr(exact, name)[layer][:, :, at]
                bound = 1e-5 if dtype == torch.float32 else 1.5 * _rel(ref_kv, truth_kv) + 1e-3
                assert _rel(got_kv, truth_kv) < bound, (name, layer)


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
    engine.allocate(18, 8)
    ids = torch.zeros(18, 1, dtype=torch.long, device=DEVICE)
    with pytest.raises(ValueError, match="R <= 16"):
        engine._triton.forward(ids, torch.zeros(18, 1, dtype=torch.long, device=DEVICE),
                               torch.zeros(18, dtype=torch.long, device=DEVICE))
    from simplear.sampling.triton_decode import ENGINE_ROWS

    assert engine.uses_triton(ENGINE_ROWS) and not engine.uses_triton(ENGINE_ROWS + 1)
    with pytest.raises(ValueError, match="head_dim >= 32"):
        FastEngine(_model(hidden_size=64), OFFSET, CODEBOOK, cuda_graphs=False, kernels="triton")


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


@pytest.mark.parametrize("cfg", [True, False])
@pytest.mark.parametrize("size", [1000, 70])  # 70: most of the 64 chunks past the end
def test_fused_draw_matches_invert_cdf(cfg, size):
    from simplear.sampling.logits import invert_cdf, probs_from_logits, split_cfg
    from simplear.sampling.triton_decode import sample_plain

    gen = torch.Generator().manual_seed(size)
    images = 2
    logits = (3 * torch.randn(2 * images if cfg else images, size, generator=gen)).to(DEVICE)
    for scale, temperature in ((3.0, 1.0), (1.5, 0.7)):
        config = SamplingConfig(cfg_scale=scale if cfg else 1.0, temperature=temperature)
        values = torch.tensor([config.cfg_scale, temperature, 1.0], device=DEVICE)
        probs = probs_from_logits(split_cfg(logits, config), config)
        for u in torch.rand(6 if DEVICE == "cpu" else 200, images, 1, generator=gen).to(DEVICE):
            got = sample_plain(logits, u, values, cfg)
            assert torch.equal(got, invert_cdf(probs, u)), (u.flatten(), got)
    # The ends of the distribution: u = 0 draws the first code of positive probability, u just
    # below 1 the last.
    peaked = torch.full((images, size), -1e4, device=DEVICE)
    peaked[:, size // 3] = 0.0
    for u in (0.0, 1.0 - 2**-24):
        got = sample_plain(peaked, torch.full((images, 1), u, device=DEVICE), torch.tensor([1.0, 1.0, 1.0],
                           device=DEVICE), False)
        assert got.tolist() == [size // 3] * images
