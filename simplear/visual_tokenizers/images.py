"""PIL <-> tensor conversion for visual tokenizers (PIL, numpy and torch only; no torchvision).

The one resize policy of the project lives here, so tokenising a dataset, training a tokenizer
and scoring round-trips all see exactly the same pixels:

1. convert to RGB (palette, greyscale and alpha images are flattened; alpha over black);
2. **centre-crop** to the largest centred square (the longer side loses equal margins);
3. resize the square to `size` x `size` with bicubic filtering (PIL's antialiased bicubic, so
   downscaling does not alias), or keep it when it already has that size.

With `size=None` the images are used as they are (no crop) and must all share one size.
Tensors are float32 B x 3 x H x W in [-1, 1], the range every visual tokenizer here expects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop `image` to a square and resize it to `size` x `size` (the documented policy)."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    image = to_rgb(image)
    w, h = image.size
    side = min(w, h)
    if side == 0:
        raise ValueError("image has zero width or height")
    if w != h:
        left = (w - side) // 2
        top = (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB version of `image`; transparent pixels become black rather than undefined colours."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def pil_to_tensor(images: Image.Image | Sequence[Image.Image], size: int | None = None) -> torch.Tensor:
    """PIL image(s) -> float32 tensor B x 3 x H x W in [-1, 1].

    `size`: centre-crop and resize every image to `size` x `size` (see the module docstring).
    Without it the images are taken as they are and must all have the same size.
    """
    if isinstance(images, Image.Image):
        images = [images]
    images = list(images)
    if not images:
        raise ValueError("pil_to_tensor needs at least one image")
    arrays = []
    for image in images:
        if not isinstance(image, Image.Image):
            raise ValueError(f"expected PIL images, got {type(image).__name__}")
        image = center_crop_resize(image, size) if size is not None else to_rgb(image)
        arrays.append(np.asarray(image, dtype=np.uint8))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images have different sizes {sorted(shapes)}; pass size= to crop and resize them")
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return uint8_to_float(batch)


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 tensor in [0, 255] -> float32 in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def float_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float tensor in [-1, 1] -> uint8 in [0, 255]; values outside the range saturate."""
    return ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round_().to(torch.uint8)


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """float tensor B x 3 x H x W (or 3 x H x W) in [-1, 1] -> list of RGB PIL images."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected B x 3 x H x W, got shape {tuple(images.shape)}")
    arrays = float_to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, mode="RGB") for a in arrays]
