"""Sampling: config validation, the logits functions, the reference sampler and the fast engine."""

import gc
import shutil
import weakref

import pytest
import torch
from sampling_helpers import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    CODEBOOK,
    COND,
    OFFSET,
    UNCOND,
    chi_square_pvalue,
    exact_joint,
    one_torch_thread,
    tiny_model,
)

from simplear.sampling.config import SamplingConfig
from simplear.sampling.engine import FastEngine
from simplear.sampling.logits import cfg_combine, draw, probs_from_logits, top_k_filter, top_p_filter
from simplear.sampling.reference import reference_sample


@pytest.mark.parametrize(
    "kwargs",
    [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1), dict(cfg_scale=float("nan"))],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        SamplingConfig(**kwargs)


def test_config_overrides_keep_none_and_read_bundle_dicts():
    base = SamplingConfig.from_dict({"cfg_scale": 4.0, "top_k": None, "unknown": 1})
    assert base == SamplingConfig(cfg_scale=4.0)
    assert base.with_overrides(temperature=None, top_p=0.5) == SamplingConfig(cfg_scale=4.0, top_p=0.5)
    assert SamplingConfig(temperature=0).greedy and SamplingConfig(top_k=1).greedy
    assert not SamplingConfig(cfg_scale=1.0).uses_cfg


def test_logits_functions_by_hand():
    cond, uncond = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.0, 1.0, 1.0]])
    assert torch.allclose(cfg_combine(cond, uncond, 3.0), torch.tensor([[3.0, 4.0, -2.0]]))
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [[True, False, True, False]]
    # softmax ≈ [.032, .644, .087, .237]: 0.644 < 0.7 needs the next code too, then stop.
    assert torch.isinf(top_p_filter(logits, 0.7)).tolist() == [[True, False, True, False]]
    assert torch.isinf(top_p_filter(logits, 0.5)).tolist() == [[True, False, True, True]]
    probs = probs_from_logits(logits, SamplingConfig(temperature=0))
    assert probs.tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_draw_follows_the_distribution():
    probs = torch.tensor([0.1, 0.6, 0.0, 0.3]).expand(20000, 4)
    codes = draw(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(codes, minlength=4).float() / len(codes)
    assert freq[2] == 0
    assert torch.allclose(freq, probs[0], atol=0.015)


def test_draw_never_picks_a_code_of_probability_zero():
    # Trailing zeros after top-k/top-p, and rows whose float sum is not exactly 1: the target is
    # scaled by the row's own total, so no draw runs past the last non-zero code.
    probs = torch.tensor([[0.3, 0.7 - 1e-6, 0.0, 0.0], [1e-7, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    for _ in range(2000):
        codes = draw(probs, generators)
        assert codes[0] in (0, 1) and codes[1] == 0 and codes[2] == 2
    # Batched windows (B×W×K, as Jacobi draws them) give one code per row.
    assert draw(probs[None].expand(2, 3, 4), None).shape == (2, 3)


def test_padding_gives_the_same_codes_as_a_prompt_alone():
    model = tiny_model(codebook=64)
    config = SamplingConfig(top_k=1, cfg_scale=2.0)
    kwargs = dict(visual_offset=OFFSET, codebook_size=64, num_tokens=6, config=config)
    together = reference_sample(model, COND, UNCOND, **kwargs).codes
    for i in range(2):
        alone = reference_sample(model, [COND[i]], [UNCOND[i]], **kwargs).codes
        assert torch.equal(together[i], alone[0])


def test_reference_continues_a_given_prefix():
    model = tiny_model(codebook=64)
    kwargs = dict(visual_offset=OFFSET, codebook_size=64, num_tokens=6, config=SamplingConfig(cfg_scale=2.0))
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    free = reference_sample(model, COND, UNCOND, generator=gens(), **kwargs).codes
    prefix = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    out = reference_sample(model, COND, UNCOND, generator=gens(), prefix=prefix, prefix_lengths=[0, 3], **kwargs).codes
    assert torch.equal(out[0], free[0])  # length 0: drawn as without a prefix
    assert out[1, :3].tolist() == [9, 10, 11]
    whole = reference_sample(model, COND, UNCOND, prefix=torch.arange(12).view(2, 6), **kwargs).codes
    assert torch.equal(whole, torch.arange(12).view(2, 6))
    # The continuation is the model's: greedy after a prefix equals greedy from the prefix's prompt state.
    greedy = dict(kwargs, config=SamplingConfig(top_k=1, cfg_scale=2.0))
    base = reference_sample(model, COND, UNCOND, **greedy).codes
    again = reference_sample(model, COND, UNCOND, prefix=base[:, :2], **greedy).codes
    assert torch.equal(again, base)
    for bad, message in ((dict(prefix=torch.zeros(3, 2, dtype=torch.long)), "2 x P codes"),
                         (dict(prefix=torch.full((2, 2), 64)), r"\[0, 64\)"),
                         (dict(prefix=torch.zeros(2, 2, dtype=torch.long), prefix_lengths=[1, 3]), "lengths in"),
                         (dict(prefix_lengths=[1, 1]), "needs a prefix")):
        with pytest.raises(ValueError, match=message):
            reference_sample(model, COND, UNCOND, **kwargs, **bad)


def test_reference_stats_and_errors():
    model = tiny_model(codebook=64)
    out = reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=5)
    assert out.codes.shape == (2, 5) and out.codes.dtype == torch.long
    assert out.codes.min() >= 0 and out.codes.max() < 64
    assert out.stats["forward_passes"] == 5 and out.stats["tokens"] == 5
    with pytest.raises(ValueError, match="output head"):
        reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=65, num_tokens=5)
    with pytest.raises(ValueError, match="unconditional"):
        reference_sample(model, COND, None, visual_offset=OFFSET, codebook_size=64, num_tokens=5)


def test_engine_kernel_choice(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    model = tiny_model(codebook=64)
    assert FastEngine(model, OFFSET, 64).kernels == "torch"  # auto: Triton only on CUDA in bf16/fp16
    assert FastEngine(model, OFFSET, 64, kernels="torch").kernels == "torch"
    with pytest.raises(ValueError, match="needs the model on a CUDA device"):
        FastEngine(model, OFFSET, 64, kernels="triton")
    with pytest.raises(ValueError, match="kernels must be"):
        FastEngine(model, OFFSET, 64, kernels="cuda")


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_engine_greedy_matches_reference_token_for_token(cfg_scale):
    model = tiny_model(codebook=64, seed=1)
    config = SamplingConfig(top_k=1, cfg_scale=cfg_scale)
    ref = reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=16, config=config)
    engine = FastEngine(model, OFFSET, 64)
    fast = engine.sample(COND, UNCOND, num_tokens=16, config=config)
    assert torch.equal(ref.codes, fast.codes)
    assert fast.stats["forward_passes"] == 16
    # The cache is reused across calls of another batch shape without stale state.
    again = engine.sample(COND[:1], UNCOND[:1], num_tokens=16, config=config)
    assert torch.equal(again.codes[0], ref.codes[0])


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_engine_matches_reference_and_follows_refresh():
    # The CPU compile path: frozen weights, autotuned C++ GEMMs, fused attention. Greedy codes must
    # equal the reference's, and after the weights change `refresh()` must not reuse the old
    # frozen constants.
    model = tiny_model(codebook=64, seed=1)
    config = SamplingConfig(top_k=1, cfg_scale=3.0)
    engine = FastEngine(model, OFFSET, 64, compile=True)
    ref = reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=16, config=config)
    assert torch.equal(engine.sample(COND, UNCOND, num_tokens=16, config=config).codes, ref.codes)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(1.5)
    engine.refresh()
    new_ref = reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=16, config=config)
    assert not torch.equal(new_ref.codes, ref.codes)  # the change matters
    assert torch.equal(engine.sample(COND, UNCOND, num_tokens=16, config=config).codes, new_ref.codes)
    # Known shapes skip dynamo's per-call guard check: switching between two compiled batch
    # shapes (and cache sizes) must still run each shape's own compiled step.
    one = reference_sample(model, COND[:1], UNCOND[:1], visual_offset=OFFSET, codebook_size=64, num_tokens=9,
                           config=config)
    for _ in range(2):
        assert torch.equal(engine.sample(COND[:1], UNCOND[:1], num_tokens=9, config=config).codes, one.codes)
        assert torch.equal(engine.sample(COND, UNCOND, num_tokens=16, config=config).codes, new_ref.codes)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_engine_survives_more_refreshes_than_the_recompile_limit(monkeypatch):
    # Each refresh freezes new weights into a new compiled step; those must not pile up on one
    # code object until dynamo's recompile limit (lowered here to 2 to keep the test short).
    import torch._dynamo.config as dynamo_config

    monkeypatch.setattr(dynamo_config, "recompile_limit", 2)
    model = tiny_model(codebook=64, seed=2)
    config = SamplingConfig(top_k=1, cfg_scale=3.0)
    engine = FastEngine(model, OFFSET, 64, compile=True)
    snapshots = []
    for _ in range(4):
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(1.1)
        engine.refresh()
        ref = reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=6, config=config)
        assert torch.equal(engine.sample(COND, UNCOND, num_tokens=6, config=config).codes, ref.codes)
        snapshots.append(weakref.ref(engine.weights.layers[0].wqkv))
    # The weights frozen into the replaced compiled steps are freed (not one copy per refresh).
    gc.collect()
    assert [s() is None for s in snapshots] == [True, True, True, False]


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_engine_samples_inside_the_graph_with_the_reference_random_numbers():
    # On CPU the compiled step also applies CFG, temperature, top-k/top-p and the draw, taking its
    # uniform numbers from the same generators in the same order as `draw`: with equal seeds the
    # codes equal the reference sampler's (an exact tie at a CDF boundary is the only way not to).
    model = tiny_model(codebook=64, seed=3)
    engine = FastEngine(model, OFFSET, 64, compile=True)
    configs = [SamplingConfig(cfg_scale=3.0, temperature=0.9), SamplingConfig(cfg_scale=2.0, temperature=1.3),
               SamplingConfig(cfg_scale=4.0, top_p=0.8, top_k=20), SamplingConfig(cfg_scale=1.0, temperature=0.7)]
    for config in configs:
        kwargs = dict(num_tokens=12, config=config)
        ref = reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64,
                               generator=[torch.Generator().manual_seed(i) for i in (5, 6)], **kwargs)
        fast = engine.sample(COND, UNCOND, generator=[torch.Generator().manual_seed(i) for i in (5, 6)], **kwargs)
        assert torch.equal(fast.codes, ref.codes), config
    # New CFG scales and temperatures reuse a compiled step; what shapes the graph makes another.
    assert len(engine._decoders) == 3
    # The CFG-off config reallocated the cache (2 rows); now 4 rows of 17 columns again, with
    # another prompt (3 + 14 columns instead of 5 + 12), through the known-shape fast path: the
    # compiled step must read the cache this prompt was prefilled into (it once read the first
    # cache of that size, still holding the old prompt), and not assume the old token count.
    cond, uncond = [[1, 2, 3], [4, 5, 6]], [[9], [10]]
    kwargs = dict(num_tokens=14, config=configs[0])
    ref = reference_sample(model, cond, uncond, visual_offset=OFFSET, codebook_size=64,
                           generator=[torch.Generator().manual_seed(i) for i in (8, 9)], **kwargs)
    fast = engine.sample(cond, uncond, generator=[torch.Generator().manual_seed(i) for i in (8, 9)], **kwargs)
    assert engine._cache_key == (4, 17) and torch.equal(fast.codes, ref.codes)


def test_compile_without_a_cpp_compiler_is_a_clear_error(monkeypatch):
    import torch._inductor.cpp_builder as cpp_builder

    def missing():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler"):
        FastEngine(tiny_model(codebook=64), OFFSET, 64, compile=True)
    FastEngine(tiny_model(codebook=64), OFFSET, 64)  # eager needs none


def test_engine_logits_match_the_model():
    model = tiny_model(codebook=64, seed=2)
    ids = torch.tensor([[1, 2, 3, 20, 30, 40]])
    engine = FastEngine(model, OFFSET, 64)
    engine.allocate(1, 8)
    slots = torch.arange(6)[None]
    mine = engine.forward(ids, slots, torch.zeros(1, dtype=torch.long), kv_len=6)
    theirs = model(ids).logits[..., OFFSET : OFFSET + 64]
    assert torch.allclose(mine, theirs, atol=1e-5)


def test_engine_samples_follow_the_reference_distribution():
    model = tiny_model()
    config = SamplingConfig(cfg_scale=2.0)
    joint = exact_joint(model, COND[0], UNCOND[0], config, depth=3)
    n = 4000
    engine = FastEngine(model, OFFSET, CODEBOOK)
    out = engine.sample([COND[0]] * n, [UNCOND[0]], num_tokens=3, config=config,
                        generator=torch.Generator().manual_seed(123))
    pvalue, tv = chi_square_pvalue(out.codes, joint)
    assert pvalue > 1e-3 and tv < 0.05, (pvalue, tv)
    # The same test rejects a sampler with the wrong CFG scale, so it has power.
    wrong = engine.sample([COND[0]] * 2000, [UNCOND[0]], num_tokens=3, config=SamplingConfig(cfg_scale=1.0),
                          generator=torch.Generator().manual_seed(123))
    assert chi_square_pvalue(wrong.codes, joint)[0] < 1e-6


def test_engine_top_k_top_p_temperature_distribution():
    model = tiny_model()
    config = SamplingConfig(cfg_scale=1.5, temperature=0.8, top_k=3, top_p=0.9)
    joint = exact_joint(model, COND[1], UNCOND[1], config, depth=2)
    engine = FastEngine(model, OFFSET, CODEBOOK)
    out = engine.sample([COND[1]] * 3000, [UNCOND[1]], num_tokens=2, config=config,
                        generator=torch.Generator().manual_seed(7))
    pvalue, tv = chi_square_pvalue(out.codes, joint)
    assert pvalue > 1e-3 and tv < 0.05, (pvalue, tv)
