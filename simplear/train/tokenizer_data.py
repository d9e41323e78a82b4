"""Image sources for tokenizer training: fresh ShapesWorld renders, a captions JSONL or a folder.

Each source hands out uint8 batches N x 3 x R x R at any requested resolution R, drawn with a
numpy Generator so runs are reproducible and resumable (the generator state is checkpointed).

- `"shapes"`: scenes are sampled and rendered on the fly (a few ms each), so the tokenizer never
  sees the same image twice and cannot overfit. ShapesWorld's held-out colour/class pairs are
  *included*: the AR model is tested on them, so the tokenizer must reconstruct them.
- a JSONL with `image` keys (paths relative to the file) or a folder of images: loaded once with
  the project's centre-crop/resize policy; the last tenth (at most 512) is held out for eval.
  Unreadable files are skipped and counted, never substituted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simplear.utils import iter_jsonl
from simplear.visual_tokenizers.images import center_crop_resize

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class ShapesSource:
    """Freshly rendered ShapesWorld scenes (all colour/class pairs allowed)."""

    def __init__(self):
        from simplear.data.shapes import ShapesConfig

        # Every scene is new; held-out scenes simply come from another generator than training.
        self.config = ShapesConfig(heldout=())

    def batch(self, rng: np.random.Generator, resolution: int, n: int) -> torch.Tensor:
        from simplear.data.shapes import render_array, sample_scene

        arrays = [render_array(sample_scene(rng, self.config), resolution) for _ in range(n)]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class FileSource:
    """Images from a captions JSONL or a folder, held in memory as uint8 per resolution."""

    def __init__(self, paths: list[Path], heldout: bool = False):
        readable: list[Image.Image] = []
        self.skipped = 0
        for path in paths:
            try:
                with Image.open(path) as im:
                    im.load()
                    readable.append(im.convert("RGB"))
            except (OSError, ValueError, Image.DecompressionBombError):
                self.skipped += 1
        if len(readable) < 2:
            raise ValueError(f"need at least 2 readable images, found {len(readable)} ({self.skipped} unreadable)")
        n_eval = min(512, max(1, len(readable) // 10))
        self.images = readable[len(readable) - n_eval :] if heldout else readable[: len(readable) - n_eval]
        self._cache: dict[int, torch.Tensor] = {}

    def _at(self, resolution: int) -> torch.Tensor:
        if resolution not in self._cache:
            arrays = [np.asarray(center_crop_resize(im, resolution)) for im in self.images]
            self._cache[resolution] = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        return self._cache[resolution]

    def batch(self, rng: np.random.Generator, resolution: int, n: int) -> torch.Tensor:
        pool = self._at(resolution)
        return pool[torch.from_numpy(rng.integers(0, pool.shape[0], size=n))]


def _jsonl_images(path: Path) -> list[Path]:
    images = []
    for lineno, item in iter_jsonl(path):
        if "image" not in item:
            raise ValueError(f"{path}:{lineno}: each line needs an 'image' key")
        images.append(path.parent / item["image"])
    return images


def make_image_source(data: str, max_images: int = 5000, heldout: bool = False):
    """`data` is "shapes", a `.jsonl` file with `image` keys, or a folder of images."""
    if data == "shapes":
        return ShapesSource()
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer training data {path} does not exist (use 'shapes', a JSONL or a folder)")
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        paths = _jsonl_images(path)
    if not paths:
        raise ValueError(f"no images found in {path}")
    return FileSource(paths[:max_images], heldout=heldout)
