"""GRPO rollouts and the log-probabilities of what they sampled, under the same distribution.

How CFG enters GRPO (the choice, and why). SimpleAR's released trainer sampled its rollouts
without guidance but was evaluated with CFG 6.0, so the distribution it optimised was not the one
it was judged by. Here the policy *is* the guided, tempered distribution the sampler draws from:

    π(code | prefix) = softmax((u + s·(c − u)) / T)   over the visual codes only,

with c and u the logits of the conditional and unconditional rows of one doubled batch, s the CFG
scale and T the temperature (s = 1 drops the unconditional rows). Rollouts are drawn with the
reference sampler at (s, T); `GuidedPolicy` recomputes log π of the drawn codes by teacher
forcing with exactly that batch layout (left padding, masks, position ids from
`sampling.batch.make_prompt_batch`, the same `visual_logits` / `cfg_combine`), so
`exp(log π_new − log π_old)` is the true importance ratio of the sampled tokens and the gradient
flows through both rows. The resulting bundle stores (s, T) as its sampling defaults, so
evaluation with CFG samples exactly the optimised policy. Top-k / top-p truncation is refused:
the truncated distribution is not the one whose log-probabilities are computed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from simplear.sampling.batch import PromptBatch, make_prompt_batch
from simplear.sampling.config import SamplingConfig
from simplear.sampling.logits import cfg_combine


def check_policy_config(config: SamplingConfig) -> None:
    """GRPO optimises softmax((u + s(c − u)) / T): no greedy decoding, no truncation."""
    if config.temperature <= 0:
        raise ValueError("GRPO needs temperature > 0: a greedy policy has no log-probabilities to optimise")
    if config.top_k not in (0, None) or (config.top_p is not None and config.top_p < 1.0):
        raise ValueError(
            "GRPO samples and optimises the full guided distribution: use top_k=0 and top_p=1.0 "
            f"(got top_k={config.top_k}, top_p={config.top_p})"
        )


@dataclass(frozen=True)
class Rollout:
    """A batch of sampled images: prompt batch, codes (B×T) and their log-probs at rollout time."""

    batch: PromptBatch
    codes: torch.Tensor
    old_logprobs: torch.Tensor | None  # None: taken from the first optimisation pass (see optimise_batch)
    ref_logprobs: torch.Tensor | None
    seconds: float

    def select(self, index: torch.Tensor) -> Rollout:
        """The rows `index` (image indices); CFG rows follow their conditional row."""
        return Rollout(
            batch=select_rows(self.batch, index),
            codes=self.codes[index],
            old_logprobs=None if self.old_logprobs is None else self.old_logprobs[index],
            ref_logprobs=None if self.ref_logprobs is None else self.ref_logprobs[index],
            seconds=self.seconds,
        )


def select_rows(batch: PromptBatch, index: torch.Tensor) -> PromptBatch:
    """Images `index` of a prompt batch, with their unconditional rows when CFG is on."""
    index = index.to(batch.ids.device)
    rows = index if batch.rows == batch.num_images else torch.cat([index, index + batch.num_images])
    return PromptBatch(
        ids=batch.ids[rows],
        attention_mask=batch.attention_mask[rows],
        position_ids=batch.position_ids[rows],
        start=batch.start[rows],
        num_images=int(index.numel()),
    )


class GuidedPolicy(nn.Module):
    """log π(codes | prompt) per image token, for a Qwen2ForCausalLM over the unified vocabulary.

    An `nn.Module` whose only parameters are the wrapped model's, so it can be wrapped in
    DistributedDataParallel as it is (DDP syncs gradients of whatever its forward touched).
    Only the visual rows of the output head are applied: no full-vocabulary logits are made.
    """

    def __init__(self, model: nn.Module, visual_offset: int, codebook_size: int, config: SamplingConfig):
        super().__init__()
        check_policy_config(config)
        self.model = model
        self.visual_offset = int(visual_offset)
        self.codebook_size = int(codebook_size)
        self.config = config

    def forward(self, batch: PromptBatch, codes: torch.Tensor) -> torch.Tensor:
        """batch: R×P prompt rows (R = 2B with CFG); codes: long B×T. Returns float32 B×T."""
        if codes.is_inference():  # samplers run under inference_mode; autograd needs a normal tensor
            codes = codes.clone()
        logp = self.log_distribution(batch, codes)
        return logp.gather(-1, codes.to(logp.device).unsqueeze(-1)).squeeze(-1)

    def log_distribution(self, batch: PromptBatch, codes: torch.Tensor) -> torch.Tensor:
        """The policy's whole log-distribution over codes at every image position: B×T×K.

        Position t is conditioned on the prompt and codes[:, :t] (teacher forcing).
        """
        if codes.is_inference():
            codes = codes.clone()
        num_images, num_tokens = codes.shape
        if num_images != batch.num_images:
            raise ValueError(f"{num_images} code rows for a batch of {batch.num_images} images")
        rows = batch.rows
        device = batch.ids.device
        # 1. Teacher-forced sequence: prompt (left-padded) + all codes but the last, on every row.
        image_ids = codes[:, :-1].to(device) + self.visual_offset
        if rows != num_images:
            image_ids = torch.cat([image_ids, image_ids])
        ids = torch.cat([batch.ids, image_ids], dim=1)
        mask = torch.cat([batch.attention_mask, torch.ones_like(image_ids)], dim=1)
        steps = torch.arange(1, num_tokens, device=device)
        positions = torch.cat([batch.position_ids, batch.position_ids[:, -1:] + steps], dim=1)
        # 2. Hidden states at the T positions that predict the codes (last prompt token onward).
        hidden = self.model.model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        hidden = hidden[:, batch.length - 1 :]
        # 3. Visual rows of the head only -> CFG -> temperature -> log-softmax over the codes.
        head = self.model.get_output_embeddings()
        visual = slice(self.visual_offset, self.visual_offset + self.codebook_size)
        bias = None if head.bias is None else head.bias[visual]
        logits = nn.functional.linear(hidden, head.weight[visual], bias).float()
        if rows != num_images:
            logits = cfg_combine(logits[:num_images], logits[num_images:], self.config.cfg_scale)
        return torch.log_softmax(logits / self.config.temperature, dim=-1)


def policy_logprobs(policy: nn.Module, rollout_batch: PromptBatch, codes: torch.Tensor,
                    micro_batch: int, autocast: Callable[[], Any] = contextlib.nullcontext) -> torch.Tensor:
    """`policy(batch, codes)` in chunks of `micro_batch` images, without gradients."""
    out = []
    with torch.no_grad(), autocast():
        for start in range(0, codes.shape[0], micro_batch):
            index = torch.arange(start, min(start + micro_batch, codes.shape[0]))
            out.append(policy(select_rows(rollout_batch, index), codes[index]))
    return torch.cat(out)


def sample_rollout(
    policy: GuidedPolicy,
    cond_ids: Sequence[Sequence[int]],
    uncond_ids: Sequence[int],
    *,
    num_tokens: int,
    generator: torch.Generator | Callable[[int], torch.Generator],
    pad_id: int,
    reference: nn.Module | None = None,
    micro_batch: int = 16,
    engine=None,
    old_logprobs: bool = True,
    sample_batch: int | None = None,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> Rollout:
    """Draw one image per row of `cond_ids` from the policy, and score the draws.

    `generator` is one generator for all draws, or a function of the first row of each chunk of
    `sample_batch` rows (default `micro_batch`) returning that chunk's generator (so the draws of a
    row do not depend on which process or batch it lands in; the DDP trainer uses this). Sampling
    takes `sample_batch` rows per call, the teacher-forced log-probs `micro_batch`: the sampler is
    faster per image in larger batches, while `micro_batch` bounds the memory of a forward pass.

    `engine` (a `FastEngine` over `policy.model`, refreshed here) samples faster than the
    reference sampler; both draw from the same distribution (tested by the sampling part).
    Returns the codes with their log-probs under the policy (`old_logprobs`, the denominator of
    every later importance ratio) and under the frozen `reference` (for the KL term), both
    computed by teacher forcing right after sampling, before any update. `old_logprobs=False`
    skips the first: when the first optimisation step sees the whole batch before any update, its
    own forward gives exactly these numbers, and one forward over the batch is saved. `autocast`
    (a context factory) wraps these teacher-forced forwards, never the sampling: the trainer
    passes the one its loss forward runs under, so every ratio compares like with like.
    """
    import time

    from simplear.sampling.reference import reference_sample

    started = time.perf_counter()
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    if engine is not None:
        engine.refresh()  # the engine keeps a snapshot of the weights; take the current ones
    codes = []
    sample_batch = sample_batch or micro_batch
    for start in range(0, len(cond_ids), sample_batch):
        chunk = [list(c) for c in cond_ids[start : start + sample_batch]]
        gen = generator(start) if callable(generator) else generator
        kwargs = dict(num_tokens=num_tokens, generator=gen, config=policy.config, pad_id=pad_id)
        with torch.no_grad():
            if engine is not None:
                result = engine.sample(chunk, [list(uncond_ids)], **kwargs)
            else:
                result = reference_sample(policy.model, chunk, [list(uncond_ids)], visual_offset=policy.visual_offset,
                                          codebook_size=policy.codebook_size, **kwargs)
        codes.append(result.codes)
    codes = torch.cat(codes).to(device)
    batch = make_prompt_batch([list(c) for c in cond_ids], [list(uncond_ids)], policy.config, device=device,
                              pad_id=pad_id)
    old = policy_logprobs(policy, batch, codes, micro_batch, autocast) if old_logprobs else None
    ref = None
    if reference is not None:
        ref = policy_logprobs(reference, batch, codes, micro_batch, autocast)
    policy.train(was_training)
    return Rollout(batch=batch, codes=codes, old_logprobs=old, ref_logprobs=ref,
                   seconds=time.perf_counter() - started)
