"""A SimpleAR-style sampler, kept only as the benchmark's baseline.

It reproduces the scheme of SimpleAR's released generate script: transformers `generate` over
the full text+image vocabulary, classifier-free guidance as a logits processor that runs the
model a second time, sequentially, on the unconditional sequence (with its own KV cache), and
stray text tokens clamped into the codebook afterwards. House style says never to sample this
way; it exists so `simplear bench sampling` can measure what the fast paths gain over it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from simplear.sampling.batch import check_vocab
from simplear.sampling.config import SamplingConfig
from simplear.sampling.result import SampleResult


def _left_pad(rows: list[list[int]], pad_id: int, device):
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row)
        mask[i, length - len(row) :] = 1
    return ids.to(device), mask.to(device)


class SequentialCFGLogitsProcessor(LogitsProcessor):
    """CFG the SimpleAR way: a second forward pass of the unconditional rows at every step."""

    def __init__(self, model, uncond_ids: torch.Tensor, uncond_mask: torch.Tensor, scale: float):
        self.model, self.scale = model, scale
        self.ids, self.mask = uncond_ids, uncond_mask
        self.cache = None
        self.calls = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.cache is None:
            positions = (self.mask.cumsum(1) - 1).clamp(min=0)
            out = self.model(input_ids=self.ids, attention_mask=self.mask, position_ids=positions, use_cache=True)
        else:
            self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
            positions = self.mask.sum(1, keepdim=True) - 1
            out = self.model(input_ids=input_ids[:, -1:], attention_mask=self.mask, position_ids=positions,
                             past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.calls += 1
        uncond = out.logits[:, -1].float()
        return uncond + self.scale * (scores.float() - uncond)


@torch.inference_mode()
def simplear_baseline_sample(
    model,
    cond_ids: Sequence[Sequence[int]],
    uncond_ids: Sequence[int] | Sequence[Sequence[int]],
    *,
    visual_offset: int,
    codebook_size: int,
    num_tokens: int,
    seed: int = 0,
    config: SamplingConfig | None = None,
    pad_id: int = 0,
) -> SampleResult:
    """SimpleAR's sampling scheme (full vocabulary, sequential CFG, clamping). Benchmark only."""
    config = config or SamplingConfig()
    check_vocab(model, visual_offset, codebook_size, num_tokens)
    device = next(model.parameters()).device
    cond = [list(r) for r in cond_ids]
    ids, mask = _left_pad(cond, pad_id, device)
    processors = LogitsProcessorList()
    cfg = None
    if config.uses_cfg:
        uncond = [list(uncond_ids)] * len(cond) if isinstance(uncond_ids[0], int) else [list(r) for r in uncond_ids]
        cfg = SequentialCFGLogitsProcessor(model, *_left_pad(uncond, pad_id, device), config.cfg_scale)
        processors.append(cfg)
    generation = GenerationConfig(
        max_new_tokens=num_tokens, min_new_tokens=num_tokens, do_sample=not config.greedy,
        temperature=config.temperature if not config.greedy else None,
        top_k=config.top_k if config.top_k > 0 and not config.greedy else None,
        top_p=config.top_p if config.top_p < 1 and not config.greedy else None,
        pad_token_id=pad_id, eos_token_id=None, use_cache=True,
    )
    torch.manual_seed(seed)
    started = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=generation,
                         logits_processor=processors)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    new = out[:, ids.shape[1] :]
    stray = int(((new < visual_offset) | (new >= visual_offset + codebook_size)).sum())
    codes = (new - visual_offset).clamp(0, codebook_size - 1)  # SimpleAR's clamp, kept to be faithful
    stats = {
        "sampler": "baseline",
        "tokens": num_tokens,
        "forward_passes": num_tokens,
        "model_calls": num_tokens * (2 if cfg is not None else 1),
        "tokens_per_forward": 1.0,
        "clamped_text_tokens": stray,
        "seconds": seconds,
    }
    return SampleResult(codes, stats)
