"""CLIP image–text similarity as a reward (the reward SimpleAR's paper used for GRPO).

`ClipReward(path)` loads a Hugging Face CLIP folder (`transformers.CLIPModel` weights, its
tokenizer, and `preprocessor_config.json`) and returns, per image, the cosine similarity between
the image embedding and its prompt's text embedding (in [-1, 1]; multiply by `scale`, e.g. CLIP's
logit scale of 100, if a larger range suits the optimiser).

The image preprocessing is written here with PIL and torch rather than taken from transformers'
image processors, whose default backend needs torchvision (not a dependency of this project):
resize the shorter side to `size` (bicubic), centre-crop to `crop_size`, scale to [0, 1],
normalise with the folder's own `image_mean` / `image_std`. It follows the folder's config, so
a CLIP trained with other statistics is preprocessed the way it was trained.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from simplear.rewards.base import check_batch, to_pil_list

# PIL resampling filters by the integer codes transformers writes into preprocessor configs.
_RESAMPLE = {0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC, 4: Image.BOX, 5: Image.HAMMING}


@dataclass(frozen=True)
class ClipPreprocess:
    """The fields of a CLIP `preprocessor_config.json` that decide the pixels the model sees."""

    shortest_edge: int
    crop_height: int
    crop_width: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    resample: int = 3
    rescale_factor: float = 1 / 255
    do_resize: bool = True
    do_center_crop: bool = True
    do_normalize: bool = True

    @classmethod
    def from_folder(cls, path: str | Path) -> ClipPreprocess:
        file = Path(path) / "preprocessor_config.json"
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} not found: a CLIP folder needs its preprocessor_config.json "
                "(image size, crop and normalisation statistics)"
            )
        cfg = json.loads(file.read_text())
        size = cfg.get("size", 224)
        if isinstance(size, dict):
            if "shortest_edge" not in size:
                raise ValueError(f"{file}: size must give 'shortest_edge', got {size}")
            size = size["shortest_edge"]
        crop = cfg.get("crop_size", size)
        crop_h, crop_w = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
        for key in ("image_mean", "image_std"):
            if len(cfg.get(key, ())) != 3:
                raise ValueError(f"{file}: {key} must hold 3 numbers, got {cfg.get(key)}")
        return cls(
            shortest_edge=int(size),
            crop_height=int(crop_h),
            crop_width=int(crop_w),
            image_mean=tuple(float(v) for v in cfg["image_mean"]),
            image_std=tuple(float(v) for v in cfg["image_std"]),
            resample=int(cfg.get("resample", 3)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            do_resize=bool(cfg.get("do_resize", True)),
            do_center_crop=bool(cfg.get("do_center_crop", True)),
            do_normalize=bool(cfg.get("do_normalize", True)),
        )

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> float tensor B×3×crop_h×crop_w, normalised."""
        batch = [self._one(image) for image in images]
        return torch.stack(batch)

    def _one(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        if self.do_resize:
            w, h = image.size
            short, long = (w, h) if w <= h else (h, w)
            # Shorter side to `shortest_edge`, aspect kept (truncating, as CLIP's processor does).
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
            if (new_w, new_h) != (w, h):
                image = image.resize((new_w, new_h), _RESAMPLE.get(self.resample, Image.BICUBIC))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)
        if self.do_center_crop:
            pixels = _center_crop(pixels, self.crop_height, self.crop_width)
        pixels = pixels * self.rescale_factor
        if self.do_normalize:
            mean = torch.tensor(self.image_mean).view(3, 1, 1)
            std = torch.tensor(self.image_std).view(3, 1, 1)
            pixels = (pixels - mean) / std
        return pixels


def _center_crop(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre crop C×H×W; pads with zeros where the image is smaller than the crop."""
    _, h, w = pixels.shape
    if h < height or w < width:
        pad_h, pad_w = max(height - h, 0), max(width - w, 0)
        pixels = torch.nn.functional.pad(pixels, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        _, h, w = pixels.shape
    top, left = (h - height) // 2, (w - width) // 2
    return pixels[:, top : top + height, left : left + width]


class ClipReward:
    """`reward(images, prompts, metadata) -> tensor[B]`: cosine(image embedding, prompt embedding).

    `metadata` is ignored. Text longer than the text encoder's context is truncated (CLIP's own
    practice). The model runs in eval mode under `torch.inference_mode()`; rewards come back on CPU.
    """

    def __init__(self, path: str | Path, device: str | torch.device | None = None, scale: float = 1.0,
                 batch_size: int = 64):
        from transformers import AutoTokenizer, CLIPModel

        from simplear.utils import pick_device

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"CLIP folder {path} does not exist (expected a Hugging Face CLIPModel folder)")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}/config.json not found: not a Hugging Face CLIP folder")
        self.path = path
        self.device = pick_device(None if device is None else str(device))
        self.scale = float(scale)
        self.batch_size = int(batch_size)
        self.preprocess = ClipPreprocess.from_folder(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = CLIPModel.from_pretrained(path).to(self.device).eval()
        self.max_text_tokens = int(self.model.config.text_config.max_position_embeddings)

    def __repr__(self) -> str:
        return f"ClipReward({str(self.path)!r}, scale={self.scale})"

    @torch.inference_mode()
    def embed_images(self, images: Any) -> torch.Tensor:
        """Unit-norm image embeddings B×D."""
        pixels = self.preprocess(to_pil_list(images)).to(self.device)
        return _unit(_features(self.model.get_image_features(pixel_values=pixels)))

    @torch.inference_mode()
    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings B×D."""
        batch = self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        ).to(self.device)
        feats = self.model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return _unit(_features(feats))

    def __call__(self, images: Any, prompts: Sequence[str], metadata: Sequence[dict] | None = None) -> torch.Tensor:
        images = to_pil_list(images)
        if prompts is None:
            raise ValueError("ClipReward needs the prompt text of every image")
        check_batch(images, prompts, None)
        out = []
        for start in range(0, len(images), self.batch_size):
            img = self.embed_images(images[start : start + self.batch_size])
            txt = self.embed_texts(prompts[start : start + self.batch_size])
            out.append((img * txt).sum(-1).float().cpu())
        if not out:
            return torch.zeros(0)
        return torch.cat(out) * self.scale


def _features(output: Any) -> torch.Tensor:
    # transformers 5 may return a model output with `pooler_output` instead of a bare tensor.
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
