"""NVIDIA Cosmos-1.0-Tokenizer-DV8x16x16 loader (the tokenizer of the released SimpleAR models).

A Cosmos tokenizer folder holds TorchScript programs `encoder.jit` and `decoder.jit`. Their
conventions (video models; an image is a one-frame video):
- encoder: float B x 3 x T x H x W in [-1, 1] -> tuple whose first element is the indices
  B x t x h x w in [0, 64000) (FSQ levels [8, 8, 8, 5, 5, 5]; 16x spatial downsampling);
- decoder: indices B x t x h x w -> float B x 3 x T x H x W in [-1, 1].
This wrapper adds and removes the time axis (T = t = 1) so it has the same interface as our FSQ
autoencoder, and checks every index against the codebook size instead of trusting it.

Security: `torch.jit.load` runs code stored in the file. Only load Cosmos folders you trust
(e.g. downloaded from NVIDIA's own Hugging Face repository).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

ENCODER_NAME = "encoder.jit"
DECODER_NAME = "decoder.jit"
COSMOS_CODEBOOK_SIZE = 64_000
COSMOS_DOWNSAMPLE = 16


def is_cosmos_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / ENCODER_NAME).is_file() and (path / DECODER_NAME).is_file()


class CosmosTokenizer:
    """Cosmos DV8x16x16 TorchScript encoder/decoder behind the visual tokenizer interface."""

    kind = "cosmos"

    def __init__(
        self,
        encoder: torch.jit.ScriptModule,
        decoder: torch.jit.ScriptModule,
        device: torch.device,
        source: str | None = None,
        codebook_size: int = COSMOS_CODEBOOK_SIZE,
        downsample: int = COSMOS_DOWNSAMPLE,
    ):
        self.encoder = encoder
        self.decoder = decoder
        self.device = device
        self.source = source
        self.codebook_size = codebook_size
        self.downsample = downsample

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device | None = None) -> CosmosTokenizer:
        """Load `encoder.jit` and `decoder.jit` from `folder` onto `device` (runs code from the files)."""
        folder = Path(folder)
        if not is_cosmos_folder(folder):
            raise FileNotFoundError(f"{folder} is not a Cosmos tokenizer folder: it needs {ENCODER_NAME} and {DECODER_NAME}")
        device = torch.device(device) if device is not None else torch.device("cpu")
        encoder = torch.jit.load(str(folder / ENCODER_NAME), map_location=device).eval()
        decoder = torch.jit.load(str(folder / DECODER_NAME), map_location=device).eval()
        return cls(encoder, decoder, device, source=str(folder.resolve()))

    def to(self, device: str | torch.device) -> CosmosTokenizer:
        self.device = torch.device(device)
        self.encoder.to(self.device)
        self.decoder.to(self.device)
        return self

    def eval(self) -> CosmosTokenizer:
        return self

    def _check_codes(self, codes: torch.Tensor, where: str) -> torch.Tensor:
        if codes.dtype.is_floating_point:
            raise ValueError(f"{where}: expected integer indices, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"{where}: indices out of range [0, {self.codebook_size}) "
                f"(min {int(codes.min())}, max {int(codes.max())}); is this a DV8x16x16 tokenizer?"
            )
        return codes.long()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """float B x 3 x H x W in [-1, 1] -> long codes B x H/16 x W/16."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images B x 3 x H x W, got {getattr(images, 'shape', type(images).__name__)}")
        h, w = images.shape[-2:]
        if h % self.downsample or w % self.downsample:
            raise ValueError(f"image size {h}x{w} is not divisible by {self.downsample}")
        out = self.encoder(images.to(self.device, torch.float32).unsqueeze(2))
        indices = out[0] if isinstance(out, (tuple, list)) else out
        if indices.dim() != 4 or indices.shape[1] != 1:
            raise ValueError(f"Cosmos encoder returned indices of shape {tuple(indices.shape)}, expected B x 1 x h x w")
        return self._check_codes(indices[:, 0], "Cosmos encoder")

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """long codes B x h x w -> float images B x 3 x 16h x 16w in [-1, 1]."""
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
            raise ValueError(f"expected codes B x h x w, got {getattr(codes, 'shape', type(codes).__name__)}")
        codes = self._check_codes(codes, "Cosmos decode").to(self.device)
        video = self.decoder(codes.unsqueeze(1))
        if isinstance(video, (tuple, list)):
            video = video[0]
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"Cosmos decoder returned shape {tuple(video.shape)}, expected B x 3 x T x H x W")
        return video[:, :, 0].float().clamp(-1.0, 1.0)

    def fingerprint(self) -> str:
        """sha256 over the two TorchScript files (the tokenizer identity in shard manifests)."""
        return self._files_sha256((ENCODER_NAME, DECODER_NAME))

    def codes_fingerprint(self) -> str:
        """sha256 over `encoder.jit` alone: what decides the codes."""
        return self._files_sha256((ENCODER_NAME,))

    def _files_sha256(self, names: tuple[str, ...]) -> str:
        if self.source is None:
            raise ValueError("this Cosmos tokenizer was not loaded from a folder; no fingerprint")
        digest = hashlib.sha256()
        for name in names:
            with open(Path(self.source) / name, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()
