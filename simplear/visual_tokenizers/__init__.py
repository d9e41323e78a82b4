"""Visual tokenizers: images <-> discrete codes, behind one small interface.

Two kinds, chosen by what a folder contains (`load_visual_tokenizer`):
- `"fsq"`: our convolutional FSQ autoencoder (`config.json` with `"kind": "fsq"` +
  `model.safetensors`), trainable with `simplear train tokenizer`;
- `"cosmos"`: NVIDIA Cosmos-1.0-Tokenizer-DV8x16x16 (`encoder.jit` + `decoder.jit`), the
  tokenizer of the released SimpleAR checkpoints. Loading it runs TorchScript code from the
  files: only load folders you trust.

Both take images as float B x 3 x H x W in [-1, 1] and return codes as long B x h x w
(`images.py` converts from and to PIL with the project's one crop/resize policy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from simplear.visual_tokenizers.autoencoder import CONFIG_NAME, FSQAutoencoder, FSQAutoencoderConfig
from simplear.visual_tokenizers.cosmos import CosmosTokenizer, is_cosmos_folder
from simplear.visual_tokenizers.fsq import FSQ
from simplear.visual_tokenizers.images import pil_to_tensor, tensor_to_pil

__all__ = [
    "FSQ",
    "CosmosTokenizer",
    "FSQAutoencoder",
    "FSQAutoencoderConfig",
    "VisualTokenizer",
    "load_visual_tokenizer",
    "pil_to_tensor",
    "same_codes",
    "tensor_to_pil",
    "tokenizer_identity",
]


@runtime_checkable
class VisualTokenizer(Protocol):
    """What every visual tokenizer offers (ours also has `save_pretrained(dir)`)."""

    kind: str
    codebook_size: int
    downsample: int

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...

    def to(self, device): ...

    def fingerprint(self) -> str: ...

    def codes_fingerprint(self) -> str: ...


def load_visual_tokenizer(path: str | Path, device: str | torch.device | None = None) -> VisualTokenizer:
    """Load the visual tokenizer stored in folder `path` (kind detected from its files) onto `device`.

    `device=None` means CPU; pass "cuda" (or `simplear.utils.pick_device()`) for the GPU.
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"visual tokenizer folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder; a visual tokenizer is a folder")
    if is_cosmos_folder(folder):
        return CosmosTokenizer.from_folder(folder, device=device)
    if (folder / CONFIG_NAME).is_file():
        return FSQAutoencoder.from_pretrained(folder, device=device)
    raise FileNotFoundError(
        f"{folder} holds no visual tokenizer: expected {CONFIG_NAME} + model.safetensors (ours) "
        "or encoder.jit + decoder.jit (Cosmos DV8x16x16)"
    )


def tokenizer_identity(tokenizer: VisualTokenizer) -> dict:
    """The fields token shards record to tie codes to the tokenizer that made them."""
    return {
        "kind": tokenizer.kind,
        "path": getattr(tokenizer, "source", None),
        "codebook_size": int(tokenizer.codebook_size),
        "downsample": int(tokenizer.downsample),
        "sha256": tokenizer.fingerprint(),
        # A tokenizer of the user's own without codes_fingerprint is matched by `sha256` alone.
        **({"codes_sha256": tokenizer.codes_fingerprint()} if hasattr(tokenizer, "codes_fingerprint") else {}),
    }


def same_codes(a: dict, b: dict) -> str | None:
    """None when identities `a` and `b` (from `tokenizer_identity`) make the same codes, else the
    first field that tells them apart. Identities written before `codes_sha256` existed are compared
    by their whole-tokenizer `sha256`."""
    keys = ["kind", "codebook_size", "codes_sha256" if a.get("codes_sha256") and b.get("codes_sha256") else "sha256"]
    return next((key for key in keys if a.get(key) != b.get(key)), None)
