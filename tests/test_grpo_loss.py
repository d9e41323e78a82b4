"""The GRPO loss and group advantages against numbers worked out by hand."""

import math

import pytest
import torch

from simplear.train.grpo_loss import group_advantages, grpo_loss


def _log(rows):
    return torch.tensor([[math.log(v) for v in row] for row in rows], dtype=torch.float64)


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    adv = group_advantages(rewards, group_size=4, eps=1e-4)
    # Group 1: mean 0.5, population std 0.5 -> ±0.5 / 0.5001. Group 2: all equal -> exactly 0.
    expected = 0.5 / 0.5001
    assert torch.allclose(adv[:4], torch.tensor([expected, -expected, -expected, expected]))
    assert torch.equal(adv[4:], torch.zeros(4))
    # G = 2 with rewards (0, 1): the natural ±1 scale.
    assert torch.allclose(group_advantages(torch.tensor([0.0, 1.0]), 2, eps=0.0), torch.tensor([-1.0, 1.0]))


def test_flat_groups_are_the_groups_without_signal():
    from simplear.train.grpo_loss import flat_group_fraction

    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5, 0.0, 0.0])
    assert flat_group_fraction(rewards, 2) == 0.75  # (1, 1), (0.5, 0.5), (0, 0) of four groups
    assert flat_group_fraction(rewards, 4) == 0.0
    assert (group_advantages(rewards, 2).view(-1, 2).abs().sum(dim=1) == 0).float().mean() == 0.75
    with pytest.raises(ValueError, match="groups of 3"):
        flat_group_fraction(rewards, 3)


def test_group_advantages_rejects_ragged_groups():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.zeros(4), group_size=3)


def test_grpo_loss_matches_hand_computation():
    # Probabilities chosen so the ratios are 1.25, 1.0 (sample 0) and 0.6, 1.5 (sample 1).
    logp = _log([[0.5, 0.2], [0.3, 0.9]]).requires_grad_(True)
    old = _log([[0.4, 0.2], [0.5, 0.6]])
    ref = _log([[0.5, 0.1], [0.3, 0.3]])
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    loss, stats = grpo_loss(logp, old, adv, ref_logprobs=ref, clip_eps=0.2, beta=0.1)

    # Surrogates: min(1.25, 1.2)=1.2 and 1.0 for A=+1; min(-1.2, -1.6)=-1.6 and min(-3.0, -2.4)=-3.0 for A=-2.
    # k3 KL: 0, 0.5-ln0.5-1, 0, 1/3+ln3-1.
    kl01 = 0.5 - math.log(0.5) - 1
    kl11 = 1 / 3 + math.log(3) - 1
    sample0 = (-(1.2) + -(1.0 - 0.1 * kl01)) / 2
    sample1 = (1.6 + (3.0 + 0.1 * kl11)) / 2
    assert loss.item() == pytest.approx((sample0 + sample1) / 2, abs=1e-9)
    assert stats.clip_fraction == pytest.approx(0.75)  # 1.25, 0.6 and 1.5 lie outside [0.8, 1.2]
    assert stats.kl == pytest.approx((kl01 + kl11) / 4)

    loss.backward()
    grad = logp.grad
    # Token (0,0): clipped branch chosen and ref == policy -> no gradient at all.
    assert grad[0, 0].item() == pytest.approx(0.0, abs=1e-12)
    # Token (1,0): ratio 0.6 < 0.8 with A < 0 -> the clipped (constant) branch is the min -> only KL (zero here).
    assert grad[1, 0].item() == pytest.approx(0.0, abs=1e-12)
    # Token (1,1): unclipped branch -A·ρ plus β·(1 - ref/p), averaged over 2 tokens and 2 samples.
    assert grad[1, 1].item() == pytest.approx((2 * 1.5 + 0.1 * (1 - 1 / 3)) / 4, abs=1e-9)
    # Token (0,1): ratio 1 inside the clip range: -A·ρ + β·(1 - 0.5).
    assert grad[0, 1].item() == pytest.approx((-1.0 + 0.1 * 0.5) / 4, abs=1e-9)


def test_beta_zero_needs_no_reference_and_on_policy_loss_is_minus_mean_advantage():
    logp = torch.randn(3, 5, dtype=torch.float64)
    adv = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    loss, stats = grpo_loss(logp, logp.clone(), adv, beta=0.0)
    # On-policy (ratio 1 everywhere): the loss is -mean(A), nothing clipped, no KL.
    assert loss.item() == pytest.approx(-adv.mean().item())
    assert stats.clip_fraction == 0.0 and stats.kl == 0.0


def test_mask_averages_each_sample_over_its_own_tokens():
    logp = torch.zeros(2, 4, dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    loss, _ = grpo_loss(logp, logp.clone(), adv, mask=mask)
    assert loss.item() == pytest.approx(-1.0)


def test_bad_arguments_are_clear_errors():
    logp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(logp, logp, torch.zeros(2), beta=0.1)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logp, logp, torch.zeros(3))
    with pytest.raises(ValueError, match="beta"):
        grpo_loss(logp, logp, torch.zeros(2), ref_logprobs=logp, beta=-1.0)
