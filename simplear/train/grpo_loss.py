"""The GRPO objective as pure functions (Shao et al., DeepSeekMath, arXiv 2402.03300 §4.1).

No model, no sampling, no state: tensors in, a scalar loss and its statistics out, so a test can
check every term against a hand computation.

1. `group_advantages`: rewards of G samples of the same prompt, normalised within their group:
   A = (r - mean_group) / (std_group + eps). A group whose samples all scored the same carries no
   signal and gets A = 0 exactly (not noise amplified by a tiny std).
2. `grpo_loss`: per image token t of sample i, with ratio ρ = exp(logp - logp_old),
       surrogate = min(ρ·A_i, clip(ρ, 1-ε, 1+ε)·A_i)                      (PPO's clipped objective)
       kl        = exp(logp_ref - logp) - (logp_ref - logp) - 1            (the k3 estimator, >= 0)
       loss_t    = -(surrogate - β·kl)
   averaged over the image tokens of each sample, then over samples. Every sample has the same
   number of image tokens (a fixed grid), so this is also the plain token mean when no mask is
   given; with a mask each sample is averaged over its own tokens first (GRPO's 1/|o_i|).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """Rewards laid out group after group (N·G,) -> advantages of the same shape.

    The std is the population std (divide by G): with G = 2 and rewards (0, 1) the advantages
    are (-1, +1), the natural scale.
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D (N·G,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    groups = rewards.view(-1, group_size)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, keepdim=True, unbiased=False)
    adv = (groups - mean) / (std + eps)
    # Equal rewards: exact zeros, so floating-point noise is never amplified into a signal.
    adv = torch.where(std > 0, adv, torch.zeros_like(adv))
    return adv.reshape(-1)


def flat_group_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """The share of groups whose rewards are all equal: their advantages are zero, so they give
    the policy no gradient (only the KL term). Rewards laid out group after group, as above."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.ndim != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{tuple(rewards.shape)} rewards do not split into groups of {group_size}")
    return float((rewards.view(-1, group_size).std(dim=1, unbiased=False) == 0).float().mean())


@dataclass(frozen=True)
class LossStats:
    """Detached summaries of one loss evaluation (floats, for logging)."""

    loss: float
    policy_loss: float
    kl: float
    clip_fraction: float
    ratio_mean: float
    ratio_max: float


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    ref_logprobs: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    beta: float = 0.0,
) -> tuple[torch.Tensor, LossStats]:
    """Clipped GRPO loss with a KL penalty to a frozen reference.

    logprobs:     B×T log-probabilities of the sampled image tokens under the current policy
                  (carries the gradient).
    old_logprobs: B×T the same under the policy that sampled them (rollout time; no gradient).
    advantages:   B   one advantage per sample (from `group_advantages`).
    ref_logprobs: B×T under the frozen reference; required when beta > 0.
    mask:         B×T 1 for tokens that count (default: all).
    Returns (loss, LossStats).
    """
    if logprobs.shape != old_logprobs.shape or logprobs.ndim != 2:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and old_logprobs {tuple(old_logprobs.shape)} must be equal B×T")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must have shape ({logprobs.shape[0]},), got {tuple(advantages.shape)}")
    if clip_eps <= 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs (the frozen reference's log-probs)")
    if mask is None:
        mask = torch.ones_like(logprobs)
    mask = mask.to(logprobs.dtype)

    old_logprobs = old_logprobs.detach()
    adv = advantages.detach().to(logprobs.dtype).unsqueeze(1)
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    surrogate = torch.minimum(ratio * adv, clipped * adv)

    if ref_logprobs is not None:
        delta = ref_logprobs.detach() - logprobs
        kl = torch.exp(delta) - delta - 1.0
    else:
        kl = torch.zeros_like(logprobs)

    per_token = -(surrogate - beta * kl)
    tokens_per_sample = mask.sum(dim=1).clamp_min(1.0)
    per_sample = (per_token * mask).sum(dim=1) / tokens_per_sample
    loss = per_sample.mean()

    with torch.no_grad():
        total = mask.sum().clamp_min(1.0)
        was_clipped = ((ratio - clipped).abs() > 0).to(mask.dtype)
        stats = LossStats(
            loss=float(loss),
            policy_loss=float(((-surrogate * mask).sum(1) / tokens_per_sample).mean()),
            kl=float((kl * mask).sum() / total),
            clip_fraction=float((was_clipped * mask).sum() / total),
            ratio_mean=float((ratio * mask).sum() / total),
            ratio_max=float(ratio.max()) if ratio.numel() else 1.0,
        )
    return loss, stats
