"""Next-token loss on image tokens, over the visual rows of the head only, in chunks.

Why only image tokens: the caption is given at sampling time, never generated, so modelling it
spends capacity on nothing the user sees (SimpleAR's released training likewise masks the
prompt). Why only the visual rows: the sampler restricts logits to the visual vocabulary, so the
model is trained on exactly the distribution it is sampled from (softmax over the codes) and
never wastes probability on "a text token inside an image". Why chunks: full-vocabulary fp32
logits for every position (4,096 x 215,672 x 4 bytes = 3.5 GB per 1,024-px sequence for 0.5B) are
never built; each chunk's logits are recomputed in backward (activation checkpointing), so only
one chunk of visual logits exists at a time.

An optional text loss (softmax over the text rows) can be mixed in with `text_loss_weight`.
`ARLoss` is an nn.Module wrapping the stock model so DDP/FSDP wrap it as their root.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _ce_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_ce_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """Sum of cross-entropies of `hidden @ weight.T` against `targets`, `chunk` rows at a time."""
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start:start + chunk], targets[start:start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            total = total + checkpoint(_ce_sum, h, weight, t, use_reentrant=False)
        else:
            total = total + _ce_sum(h, weight, t)
    return total


class ARLoss(torch.nn.Module):
    """Wraps a `Qwen2ForCausalLM`; forward returns (summed loss, number of loss tokens)."""

    def __init__(self, model, visual_offset: int, codebook_size: int, text_loss_weight: float = 0.0,
                 chunk: int = 2048):
        super().__init__()
        self.model = model
        self.visual_offset, self.codebook_size = int(visual_offset), int(codebook_size)
        self.text_loss_weight, self.chunk = float(text_loss_weight), int(chunk)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor, image_mask: torch.Tensor):
        # The decoder alone: final (normed) hidden states, no logits for any position.
        hidden = self.model.model(input_ids=input_ids, use_cache=False).last_hidden_state
        head = self.model.get_output_embeddings().weight
        lo, hi = self.visual_offset, self.visual_offset + self.codebook_size
        image_targets = targets[image_mask] - lo
        if image_targets.numel() and (int(image_targets.min()) < 0 or int(image_targets.max()) >= self.codebook_size):
            raise ValueError("an image target is not a visual token: the batch and the vocabulary disagree")
        loss = chunked_ce_sum(hidden[image_mask], head[lo:hi], image_targets, self.chunk)
        count = image_targets.numel()
        if self.text_loss_weight > 0:
            text_mask = (targets >= 0) & ~image_mask
            text_loss = chunked_ce_sum(hidden[text_mask], head[:lo], targets[text_mask], self.chunk)
            loss = loss + self.text_loss_weight * text_loss
        return loss, count


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer in backward (transformers 5 name, falling back to the old one)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:  # transformers 4.x
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
