"""The reference sampler: the plain, KV-cached AR loop every faster sampler is tested against.

It runs stock `Qwen2ForCausalLM.forward` with a `DynamicCache`, CFG as one doubled batch
(conditional rows then unconditional rows, one forward per step), explicit attention masks and
position ids for left-padded prompts, and the pure functions of `logits.py`. It is written for
clarity, not speed: the full-vocabulary head runs and is then sliced to the visual ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache

from simplear.sampling.batch import check_vocab, make_prompt_batch
from simplear.sampling.config import SamplingConfig
from simplear.sampling.logits import Generators, draw, probs_from_logits, split_cfg, visual_logits
from simplear.sampling.result import SampleResult


@torch.inference_mode()
def reference_sample(
    model,
    cond_ids: Sequence | torch.Tensor,
    uncond_ids: Sequence | torch.Tensor | None,
    *,
    visual_offset: int,
    codebook_size: int,
    num_tokens: int,
    generator: Generators = None,
    config: SamplingConfig | None = None,
    pad_id: int = 0,
    progress: Callable[[torch.Tensor, int, int], None] | None = None,
    prefix: torch.Tensor | None = None,
    prefix_lengths: Sequence[int] | None = None,
) -> SampleResult:
    """Sample `num_tokens` visual codes for each conditional prompt.

    cond_ids: B prompts (lists of unified token ids, template applied).
    uncond_ids: one unconditional/negative prompt for all, or one per prompt; unused without CFG.
    generator: one `torch.Generator` for the batch, or one per image (then image i's codes do not
        depend on what else is in the batch).
    progress: called as progress(codes, done, num_tokens) after each step; codes[:, :done] are final.
    prefix: B x P codes that image i takes instead of drawing for its first `prefix_lengths[i]`
        steps (default: all P), so the model continues a given partial image (teacher forcing).
    """
    config = config or SamplingConfig()
    check_vocab(model, visual_offset, codebook_size, num_tokens)
    device = next(model.parameters()).device
    batch = make_prompt_batch(cond_ids, uncond_ids, config, device=device, pad_id=pad_id)
    num_images = batch.num_images
    codes = torch.empty((num_images, num_tokens), dtype=torch.long, device=device)
    forced, lengths = _check_prefix(prefix, prefix_lengths, num_images, num_tokens, codebook_size, device)
    started = time.perf_counter()

    # 1. Prefill the prompts (one forward pass); its last position predicts the first code.
    cache = DynamicCache(config=model.config)
    mask = batch.attention_mask
    position = batch.position_ids
    out = model(
        input_ids=batch.ids, attention_mask=mask, position_ids=position,
        past_key_values=cache, use_cache=True, logits_to_keep=1,
    )
    forward_passes = 1
    position = position[:, -1:]
    ones = torch.ones((batch.rows, 1), dtype=mask.dtype, device=device)

    for step in range(num_tokens):
        # 2. Logits of the visual ids only -> CFG -> temperature/top-k/top-p -> draw.
        logits = visual_logits(out.logits[:, -1, :], visual_offset, codebook_size)
        probs = probs_from_logits(split_cfg(logits, config), config)
        codes[:, step] = draw(probs, generator)
        if forced is not None and step < forced.shape[1]:
            codes[:, step] = torch.where(lengths > step, forced[:, step], codes[:, step])
        if progress is not None:
            progress(codes, step + 1, num_tokens)
        if step + 1 == num_tokens:
            break
        # 3. Feed the drawn code to every row (the unconditional rows see the same image).
        next_ids = codes[:, step] + visual_offset
        if config.uses_cfg:
            next_ids = torch.cat([next_ids, next_ids])
        mask = torch.cat([mask, ones], dim=1)
        position = position + 1
        out = model(
            input_ids=next_ids[:, None], attention_mask=mask, position_ids=position,
            past_key_values=cache, use_cache=True,
        )
        forward_passes += 1

    stats = {
        "sampler": "reference",
        "tokens": num_tokens,
        "forward_passes": forward_passes,
        "tokens_per_forward": num_tokens / forward_passes,
        "seconds": time.perf_counter() - started,
    }
    return SampleResult(codes, stats)


def _check_prefix(prefix, lengths, num_images: int, num_tokens: int, codebook_size: int, device):
    """The forced codes (B x P, on `device`) and per-image prefix lengths, checked; (None, None) without."""
    if prefix is None:
        if lengths is not None:
            raise ValueError("prefix_lengths needs a prefix")
        return None, None
    prefix = torch.as_tensor(prefix, dtype=torch.long, device=device)
    if prefix.dim() != 2 or prefix.shape[0] != num_images or prefix.shape[1] > num_tokens:
        raise ValueError(f"prefix must be {num_images} x P codes with P <= {num_tokens}, got {tuple(prefix.shape)}")
    if prefix.numel() and (prefix.min() < 0 or prefix.max() >= codebook_size):
        raise ValueError(f"prefix codes must lie in [0, {codebook_size})")
    if lengths is None:
        lengths = [prefix.shape[1]] * num_images
    lengths = torch.as_tensor(list(lengths), dtype=torch.long, device=device)
    if lengths.shape != (num_images,) or lengths.min() < 0 or lengths.max() > prefix.shape[1]:
        raise ValueError(f"prefix_lengths must hold {num_images} lengths in [0, {prefix.shape[1]}]")
    return prefix, lengths
