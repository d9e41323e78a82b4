"""The CUDA paths of the samplers: captured CUDA graphs, the compiled step on a GPU, Jacobi and the
Pipeline on CUDA. Skipped on a machine without a CUDA device (CI has none); run them on a GPU
machine with `python -m pytest tests/test_cuda.py`."""

import pytest
import torch
from sampling_helpers import COND, OFFSET, UNCOND, tiny_model

from simplear.sampling.config import SamplingConfig
from simplear.sampling.engine import FastEngine
from simplear.sampling.jacobi import jacobi_sample
from simplear.sampling.reference import reference_sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cuda_model(seed: int):
    return tiny_model(codebook=64, seed=seed).cuda()


def _generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator(device="cuda").manual_seed(s) for s in seeds]


@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graph_engine_matches_reference(compile):
    model = _cuda_model(seed=1)
    engine = FastEngine(model, OFFSET, 64, compile=compile)
    assert engine.cuda_graphs
    greedy = SamplingConfig(top_k=1, cfg_scale=3.0)
    ref = reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=16, config=greedy)
    assert torch.equal(engine.sample(COND, UNCOND, num_tokens=16, config=greedy).codes, ref.codes)
    # Sampling in the captured graph takes its uniform numbers from the caller's generators in the
    # reference's order: equal seeds, equal codes; new CFG scales and temperatures replay the graph.
    for config in (SamplingConfig(cfg_scale=3.0, temperature=0.9), SamplingConfig(cfg_scale=2.0, temperature=1.3),
                   SamplingConfig(cfg_scale=4.0, top_p=0.8, top_k=20), SamplingConfig(cfg_scale=1.0)):
        kwargs = dict(num_tokens=12, config=config)
        ref = reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64,
                               generator=_generators(5, 6), **kwargs)
        fast = engine.sample(COND, UNCOND, generator=_generators(5, 6), **kwargs)
        assert torch.equal(fast.codes, ref.codes), config
    # Another prompt of another length in a cache of another size, then the first shape again:
    # the replayed graphs must read the cache that this call prefilled.
    cond, uncond = [[1, 2, 3], [4, 5, 6]], [[9], [10]]
    config = SamplingConfig(cfg_scale=3.0, temperature=0.9)
    for _ in range(2):
        for prompts, negatives, n in ((cond, uncond, 14), (COND[:1], UNCOND[:1], 9)):
            kwargs = dict(num_tokens=n, config=config)
            ref = reference_sample(model, prompts, negatives, visual_offset=OFFSET, codebook_size=64,
                                   generator=_generators(8, 9)[: len(prompts)], **kwargs)
            fast = engine.sample(prompts, negatives, generator=_generators(8, 9)[: len(prompts)], **kwargs)
            assert torch.equal(fast.codes, ref.codes)
    # After the weights change, `refresh()` must capture new graphs over the new snapshot.
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(1.5)
    engine.refresh()
    new_ref = reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=16,
                               config=greedy)
    assert torch.equal(engine.sample(COND, UNCOND, num_tokens=16, config=greedy).codes, new_ref.codes)


def test_eager_cuda_engine_without_graphs_matches_reference():
    model = _cuda_model(seed=2)
    engine = FastEngine(model, OFFSET, 64, cuda_graphs=False)
    config = SamplingConfig(cfg_scale=2.5, temperature=1.1)
    ref = reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=10,
                           config=config, generator=_generators(1, 2))
    assert torch.equal(engine.sample(COND, UNCOND, num_tokens=10, config=config, generator=_generators(1, 2)).codes,
                       ref.codes)


@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_greedy_jacobi_on_cuda_equals_greedy_ar(cfg_scale):
    model = _cuda_model(seed=3)
    config = SamplingConfig(top_k=1, cfg_scale=cfg_scale)
    ref = reference_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=24, config=config)
    engine = FastEngine(model, OFFSET, 64)
    out = jacobi_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=24, config=config,
                        window=4, engine=engine, grid_width=4)
    assert torch.equal(out.codes, ref.codes)
    assert out.stats["forward_passes"] <= 24


@pytest.mark.parametrize("compile", [False, True])
def test_captured_jacobi_pass_equals_the_eager_pass(compile):
    # On CUDA a whole Jacobi pass (step, verification, new drafts) is one captured graph whose
    # uniform numbers are drawn outside in the eager loop's order: equal seeds, equal codes.
    model = _cuda_model(seed=4)
    config = SamplingConfig(cfg_scale=2.0, temperature=1.2)
    kwargs = dict(visual_offset=OFFSET, codebook_size=64, num_tokens=40, config=config, window=6, grid_width=5)
    eager = jacobi_sample(model, COND, UNCOND, generator=_generators(3, 4),
                          engine=FastEngine(model, OFFSET, 64, cuda_graphs=False), **kwargs)
    graphed = FastEngine(model, OFFSET, 64, compile=compile)
    for _ in range(2):  # a second call captures again over its own state
        out = jacobi_sample(model, COND, UNCOND, generator=_generators(3, 4), engine=graphed, **kwargs)
        assert torch.equal(out.codes, eager.codes)
        assert out.stats["forward_passes"] == eager.stats["forward_passes"]
        assert out.stats["tokens_per_forward_per_image"] == eager.stats["tokens_per_forward_per_image"]


def test_pipeline_on_cuda_generates_what_the_engine_draws():
    from simplear import Pipeline

    pipe = Pipeline.from_pretrained(device="cuda")
    out = pipe(["a photo of a red circle", "two blue squares"], seed=3, top_k=1)
    assert len(out.images) == 2 and out.codes.device.type == "cpu"
    again = pipe(["a photo of a red circle", "two blue squares"], seed=3, top_k=1, sampler="jacobi")
    assert torch.equal(again.codes, out.codes)
