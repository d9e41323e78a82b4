"""Speculative Jacobi decoding: exact greedy agreement, the same distribution, >1 code per pass."""

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
from simplear.sampling.jacobi import jacobi_sample, next_drafts, verify_drafts
from simplear.sampling.reference import reference_sample


def test_verify_drafts_by_hand():
    # Draft 0 has p = q (always kept); draft 1 has p = 0 (always rejected) -> residual.
    p = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [1.0, 0.0, 0.0]]])
    q = torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]])
    drafts = torch.tensor([[1, 0]])
    for seed in range(5):
        accepted, code = verify_drafts(p, q, drafts, torch.Generator().manual_seed(seed))
        assert accepted.tolist() == [1]
        assert code.item() in (1, 2)  # residual max(0, p - q) puts no mass on code 0


def test_new_drafts_copy_the_code_above():
    # One image, 6 codes fixed (grid width 4), window of 6: slots 0-1 are fresh (Jacobi update),
    # slots 2-3 lie below fixed codes 4-5, slots 4-5 below the window's own slots 0-1.
    size = 10
    buffer = torch.tensor([[0, 1, 2, 3, 7, 8, 0, 0, 0, 0, 0, 0, 0]])
    done = torch.tensor([6])
    from_pass = torch.zeros((1, 6, size))
    from_pass[0, 0, 5] = from_pass[0, 1, 6] = 1.0
    fresh = torch.tensor([[True, True, False, False, False, False]])
    drafts, q = next_drafts(from_pass, fresh, buffer, done, 4, torch.Generator().manual_seed(0))
    assert drafts.tolist() == [[5, 6, 7, 8, 5, 6]]
    assert torch.equal(q[0, :2], from_pass[0, :2])
    assert torch.equal(q[0, 2:], torch.nn.functional.one_hot(drafts[0, 2:], size).float())
    # Without a grid width the new slots are uniform.
    _, q = next_drafts(from_pass, fresh, buffer, done, None, torch.Generator().manual_seed(0))
    assert torch.allclose(q[0, 2:], torch.full((4, size), 0.1))


@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_greedy_jacobi_equals_greedy_ar(cfg_scale):
    model = tiny_model(codebook=64, seed=3)
    config = SamplingConfig(temperature=0, cfg_scale=cfg_scale)
    kwargs = dict(visual_offset=OFFSET, codebook_size=64, num_tokens=30, config=config)
    ref = reference_sample(model, COND, UNCOND, **kwargs)
    for grid_width in (None, 5):
        jac = jacobi_sample(model, COND, UNCOND, window=6, generator=torch.Generator().manual_seed(0),
                            grid_width=grid_width, **kwargs)
        assert torch.equal(ref.codes, jac.codes)
        assert jac.stats["forward_passes"] <= 30


@pytest.mark.parametrize("grid_width", [None, 1, 2])
def test_jacobi_follows_the_ar_distribution_with_cfg(grid_width):
    # grid_width 1 and 2 with a window of 3: new drafts copy fixed codes and drafts of the window.
    model = tiny_model()
    config = SamplingConfig(cfg_scale=2.0)
    joint = exact_joint(model, COND[0], UNCOND[0], config, depth=3)
    n = 4000
    out = jacobi_sample(model, [COND[0]] * n, [UNCOND[0]], visual_offset=OFFSET, codebook_size=CODEBOOK,
                        num_tokens=5, config=config, window=3, generator=torch.Generator().manual_seed(11),
                        grid_width=grid_width)
    pvalue, tv = chi_square_pvalue(out.codes, joint)
    assert pvalue > 1e-3 and tv < 0.05, (pvalue, tv)
    # Drafts were really accepted: fewer passes than codes for the average image.
    assert out.stats["mean_tokens_per_forward"] > 1.2


def test_jacobi_batch_of_different_prompts_and_stats():
    model = tiny_model(codebook=64, seed=4)
    out = jacobi_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=40,
                        config=SamplingConfig(cfg_scale=1.5), window=8, generator=torch.Generator().manual_seed(0))
    assert out.codes.shape == (2, 40)
    assert out.codes.min() >= 0 and out.codes.max() < 64
    stats = out.stats
    assert stats["tokens"] == 40 and stats["window"] == 8
    assert stats["tokens_per_forward"] == pytest.approx(40 / stats["forward_passes"])
    assert all(r >= stats["tokens_per_forward"] - 1e-9 for r in stats["tokens_per_forward_per_image"])
    assert stats["draft_init"] == "uniform"
    with pytest.raises(ValueError):
        jacobi_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=4, window=0)
    with pytest.raises(ValueError, match="grid_width"):
        jacobi_sample(model, COND, UNCOND, visual_offset=OFFSET, codebook_size=64, num_tokens=4, grid_width=0)
