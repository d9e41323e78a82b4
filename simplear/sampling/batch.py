"""Prompt batches for the samplers: CFG rows, left padding, masks and position ids.

Every sampler decodes one batch holding the conditional rows [0, B) and, when CFG is on, the
unconditional rows [B, 2B) (the unconditional prompt or a per-image negative prompt). Rows are
left-padded to one length so that every row's next token sits in the same column; padding is
masked out and position ids start at 0 on each row's first real token, so a padded row computes
exactly what it would alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from simplear.sampling.config import SamplingConfig


@dataclass(frozen=True)
class PromptBatch:
    ids: torch.Tensor  # long R×P, left-padded
    attention_mask: torch.Tensor  # long R×P, 1 on real tokens
    position_ids: torch.Tensor  # long R×P, 0 at each row's first real token (0 on padding too)
    start: torch.Tensor  # long R, the column of each row's first real token (= its padding)
    num_images: int  # B; R = 2B with CFG, B without

    @property
    def rows(self) -> int:
        return self.ids.shape[0]

    @property
    def length(self) -> int:
        return self.ids.shape[1]


def _as_lists(ids, what: str) -> list[list[int]]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() == 1:
            ids = ids[None]
        return [[int(t) for t in row] for row in ids.tolist()]
    rows = list(ids)
    if rows and not isinstance(rows[0], (list, tuple, torch.Tensor)):
        rows = [rows]  # one sequence given
    out = [[int(t) for t in row] for row in rows]
    if not out:
        raise ValueError(f"{what}: expected at least one prompt")
    for row in out:
        if not row:
            raise ValueError(f"{what}: a prompt has no tokens")
    return out


def make_prompt_batch(
    cond_ids: Sequence | torch.Tensor,
    uncond_ids: Sequence | torch.Tensor | None,
    config: SamplingConfig,
    device=None,
    pad_id: int = 0,
) -> PromptBatch:
    """Stack conditional (and, with CFG, unconditional) prompts into one left-padded batch.

    `uncond_ids` is one sequence shared by all images or one per image (negative prompts).
    """
    cond = _as_lists(cond_ids, "conditional ids")
    rows = cond
    if config.uses_cfg:
        if uncond_ids is None:
            raise ValueError("cfg_scale != 1 needs unconditional ids (the unconditional or negative prompt)")
        uncond = _as_lists(uncond_ids, "unconditional ids")
        if len(uncond) == 1:
            uncond = uncond * len(cond)
        if len(uncond) != len(cond):
            raise ValueError(f"got {len(cond)} conditional prompts but {len(uncond)} unconditional ones")
        rows = cond + uncond
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    start = torch.empty(len(rows), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, length - len(row) :] = 1
        start[i] = length - len(row)
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return PromptBatch(
        ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=position_ids.to(device),
        start=start.to(device),
        num_images=len(cond),
    )


def check_vocab(model, visual_offset: int, codebook_size: int, num_tokens: int) -> None:
    """Fail before decoding when the model cannot hold the requested visual ids or length."""
    if codebook_size < 1 or visual_offset < 0:
        raise ValueError(f"bad visual range: offset {visual_offset}, codebook {codebook_size}")
    rows = model.get_output_embeddings().weight.shape[0]
    if visual_offset + codebook_size > rows:
        raise ValueError(
            f"the model's output head has {rows} rows, fewer than visual_offset + codebook_size = "
            f"{visual_offset + codebook_size}"
        )
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
