"""Finite scalar quantisation (FSQ; Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made
Simple", arXiv 2309.15505).

Each of the `d = len(levels)` latent channels is bounded and rounded to one of `levels[i]` values;
the codebook is implicit (the product grid, size prod(levels)), so there is nothing to learn, no
commitment loss and no dead codes to revive. Cosmos DV8x16x16 uses levels [8, 8, 8, 5, 5, 5]
(64,000 codes); the small tokenizers of this project use e.g. [8, 5, 5, 5] (1,000).

Conventions (channel-first, as convolutions produce them):
- `quantize(z)`: z float B x d x h x w -> values on the grid, normalised to [-1, 1], with a
  straight-through gradient (the forward pass rounds, the backward pass is the identity).
- `codes_from_quantized` / `quantized_from_codes`: grid values <-> integer codes B x h x w in
  [0, codebook_size), mixed-radix with the first channel least significant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity in the backward pass (straight-through estimator)."""
    return x + (x.round() - x).detach()


class FSQ(nn.Module):
    """Finite scalar quantiser with the implicit codebook prod(levels)."""

    def __init__(self, levels: Sequence[int], eps: float = 1e-3):
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or any(v < 2 for v in levels):
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 2, got {levels}")
        self.levels = tuple(levels)
        self.eps = eps
        self.codebook_size = int(torch.tensor(levels).prod().item())
        if self.codebook_size > 2**31 - 1:
            raise ValueError(f"codebook of {self.codebook_size} codes does not fit int32 arithmetic")
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.long), dim=0)
        # Buffers (not parameters): they move with .to(device) but are not saved as weights.
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    @property
    def dim(self) -> int:
        return len(self.levels)

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        # Per-channel constants shaped 1 x d x 1 x 1 ... to broadcast over channel-first tensors.
        return t.view(1, -1, *([1] * (ndim - 2)))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash z so that rounding yields exactly `levels[i]` distinct integers per channel.

        For even L the integers are {-L/2, ..., L/2 - 1}: the half-step offset and matching tanh
        shift keep the grid symmetric around the offset instead of wasting a level.
        """
        levels = self._view(self._levels, z.dim())
        even = levels % 2 == 0
        # Odd L: a range a hair inside +-(L-1)/2 rounds to L values. Even L: a hair outside, so
        # that atanh(offset / half_l) stays finite even for L = 2.
        half_l = (levels - 1) * (1 + torch.where(even, self.eps, -self.eps)) / 2
        offset = torch.where(even, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Bound, round (straight-through) and normalise to [-1, 1]. z: B x d x ..."""
        if z.dim() < 2 or z.shape[1] != self.dim:
            raise ValueError(f"FSQ expects B x {self.dim} x ... latents, got shape {tuple(z.shape)}")
        half_width = self._view(self._levels, z.dim()) // 2
        return round_ste(self.bound(z.float())) / half_width

    def codes_from_quantized(self, zq: torch.Tensor) -> torch.Tensor:
        """Grid values B x d x h x w (normalised) -> codes B x h x w (long)."""
        half_width = self._view(self._levels, zq.dim()) // 2
        digits = (zq * half_width + half_width).round().long()
        return (digits * self._view(self._basis, zq.dim())).sum(dim=1)

    def quantized_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes B x h x w -> grid values B x d x h x w (normalised to [-1, 1])."""
        if codes.dtype.is_floating_point:
            raise ValueError("codes must be an integer tensor")
        codes = codes.long()
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"codes out of range [0, {self.codebook_size}): min {int(codes.min())}, max {int(codes.max())}"
            )
        codes = codes.unsqueeze(1)
        levels = self._view(self._levels, codes.dim()).long()
        digits = (codes // self._view(self._basis, codes.dim())) % levels
        half_width = levels // 2
        return (digits - half_width).float() / half_width.float()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (quantised latents with straight-through gradient, codes)."""
        zq = self.quantize(z)
        return zq, self.codes_from_quantized(zq.detach())
