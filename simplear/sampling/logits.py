"""Small pure functions that turn model logits into a drawn visual code.

The sampling loop of every sampler is written with these, in this order:
`visual_logits` (restrict to the codebook, so nothing ever needs clamping) ->
`cfg_combine` (`u + s * (c - u)`) -> `probs_from_logits` (temperature, top-k, top-p) -> `draw`.

`draw` samples by inverting the cumulative distribution with one uniform number per row, which
draws exactly from p (never a code of probability 0), works unchanged on one-hot (greedy)
distributions and consumes the same random numbers for the same shapes, so two samplers that
produce the same probabilities with the same generator produce the same codes. (It replaced an
exponential race, argmax of p / E with E ~ Exp(1), whose K exponential draws per row took about
60 µs of a 1 ms CPU decode step for 2,560 codes; see docs/benchmarks.md.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from simplear.sampling.config import SamplingConfig

# One generator for the whole batch, or one per image (row), or None for torch's global one.
Generators = torch.Generator | Sequence[torch.Generator] | None


def visual_logits(logits: torch.Tensor, visual_offset: int, codebook_size: int) -> torch.Tensor:
    """The logits of the visual ids only (last dim `codebook_size`); index i is code i."""
    if logits.shape[-1] < visual_offset + codebook_size:
        raise ValueError(
            f"model has {logits.shape[-1]} output ids, fewer than visual_offset + codebook_size = "
            f"{visual_offset + codebook_size}"
        )
    return logits[..., visual_offset : visual_offset + codebook_size]


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on logits: `u + s * (c - u)`."""
    return uncond + scale * (cond - uncond)


def split_cfg(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Rows [0, B) conditional, [B, 2B) unconditional -> B combined rows (identity without CFG)."""
    if not config.uses_cfg:
        return logits
    half = logits.shape[0] // 2
    return cfg_combine(logits[:half], logits[half:], config.cfg_scale)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set everything below the k-th largest logit to -inf (k = 0 or k >= size keeps all)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest most-likely set whose probability reaches p."""
    if not isinstance(p, torch.Tensor) and p >= 1.0:  # a tensor p (the compiled step's) always filters
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = sorted_logits.softmax(dim=-1)
    # Drop a code when the mass strictly before it already reaches p; the top code always stays.
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def probs_from_logits(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Final sampling distribution (float32, rows sum to 1) after temperature/top-k/top-p.

    Greedy settings give a one-hot distribution, so speculative acceptance rules and `draw`
    need no special case for them.
    """
    logits = logits.float()
    if config.greedy:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    logits = logits / config.temperature
    logits = top_k_filter(logits, config.top_k)
    logits = top_p_filter(logits, config.top_p)
    return logits.softmax(dim=-1)


def _per_row(shape: tuple[int, ...], generator: Generators, device, fill) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return fill(torch.empty(shape, device=device), generator)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for {shape[0]} images")
    return torch.stack([fill(torch.empty(shape[1:], device=device), g) for g in generator])


def draw(probs: torch.Tensor, generator: Generators) -> torch.Tensor:
    """One code per row from `probs` (B×…×K, rows summing to about 1): the first code whose
    cumulative probability exceeds u · total, u ~ U[0, 1), i.e. exactly p.

    The target is scaled by the row's own total, so float round-off in the sum can neither run
    past the last code nor land on a code of probability 0. With one generator per image, row b's
    number comes from generator b alone.
    """
    return invert_cdf(probs, uniform(tuple(probs.shape[:-1]) + (1,), generator, probs.device))


def invert_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """`draw` with its uniform numbers given (u: B×…×1): the first code whose cumulative
    probability exceeds u · total. Written as a count (`cdf <= target` summed, which for a
    non-decreasing cdf is `searchsorted(..., right=True)`), so `torch.compile` fuses it."""
    cdf = probs.cumsum(dim=-1)
    code = (cdf <= u * cdf[..., -1:]).sum(dim=-1)
    # Only u · total rounding up to the total could reach K; in float32 u < 1 (at most 1 - 2^-24)
    # keeps the product below the total (checked over 11M totals), so this is only a guard.
    return code.clamp(max=probs.shape[-1] - 1)


def uniform(shape: tuple[int, ...], generator: Generators, device) -> torch.Tensor:
    """U[0, 1) numbers (B×…) from `generator` (used by the speculative acceptance test)."""
    return _per_row(tuple(shape), generator, device, lambda t, g: t.uniform_(generator=g))
