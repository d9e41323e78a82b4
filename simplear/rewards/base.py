"""What every reward shares: the call signature and the conversion of its image argument.

A reward is any callable `reward(images, prompts, metadata) -> torch.Tensor[B]` (float32, on the
CPU). `images` is a list of PIL images or a float tensor B×3×H×W in [-1, 1] (what a visual
tokenizer's `decode` returns); `prompts` the B prompt texts; `metadata` the B GenEval metadata
lines (dicts) or None for rewards that read only the text. Rewards are plain callables rather than
a class hierarchy so that a user's own function (e.g. a code-level reward in a test) plugs in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from PIL import Image


class Reward(Protocol):
    def __call__(
        self, images: Any, prompts: Sequence[str], metadata: Sequence[dict] | None
    ) -> torch.Tensor: ...


def to_pil_list(images: Any) -> list[Image.Image]:
    """Images as a list of RGB PIL images; accepts PIL lists or B×3×H×W tensors in [-1, 1]."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensor must be B×3×H×W in [-1, 1], got shape {tuple(images.shape)}")
        pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return [Image.fromarray(p.permute(1, 2, 0).numpy(), "RGB") for p in pixels]
    if isinstance(images, Image.Image):
        raise ValueError("pass a list of images, not one image")
    out = []
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ValueError(f"images[{i}] is {type(image).__name__}, expected a PIL image")
        out.append(image if image.mode == "RGB" else image.convert("RGB"))
    return out


def check_batch(images: list, prompts: Sequence[str] | None, metadata: Sequence[dict] | None) -> None:
    """Raise unless the prompts and metadata (where given) line up with the images."""
    n = len(images)
    if prompts is not None and len(prompts) != n:
        raise ValueError(f"{n} images but {len(prompts)} prompts")
    if metadata is not None and len(metadata) != n:
        raise ValueError(f"{n} images but {len(metadata)} metadata entries")
