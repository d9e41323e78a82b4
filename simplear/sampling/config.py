"""Typed sampling settings shared by every sampler, the Pipeline and the CLI.

`SamplingConfig` holds the four knobs of SimpleAR's sampler (CFG scale, temperature, top-k,
top-p) and checks them once, at construction, so a bad value fails loudly at the boundary and
never reaches a sampling loop. `temperature == 0` or `top_k == 1` mean greedy decoding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

# The fast engine's one-token decode step: "triton" (fused kernels, CUDA), "torch", or "auto".
ENGINE_KERNELS = ("auto", "torch", "triton")


def check_kernels(kernels: str) -> str:
    """`kernels` if it names one of ENGINE_KERNELS, else a ValueError that lists them."""
    if kernels not in ENGINE_KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(ENGINE_KERNELS)}, got {kernels!r}")
    return kernels


# SimpleAR's generate.py defaults: CFG 6.0, temperature 1.0, no top-k/top-p cut.
DEFAULT_CFG_SCALE = 6.0


@dataclass(frozen=True)
class SamplingConfig:
    """How logits become a token.

    cfg_scale: s in `u + s * (c - u)`; 1.0 switches CFG off (no unconditional rows are run).
    temperature: 0 means greedy (argmax); otherwise logits are divided by it.
    top_k: keep the k most likely codes; 0 keeps all.
    top_p: keep the smallest set of codes whose probability reaches p; 1.0 keeps all.
    """

    cfg_scale: float = DEFAULT_CFG_SCALE
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        for name in ("cfg_scale", "temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 keeps every code), got {self.top_k!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def uses_cfg(self) -> bool:
        # s = 1 gives exactly the conditional logits, so the unconditional rows can be skipped.
        return self.cfg_scale != 1.0

    def with_overrides(self, **overrides) -> SamplingConfig:
        """A copy with the given fields replaced; `None` values keep the current setting."""
        unknown = set(overrides) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown sampling settings: {sorted(unknown)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_dict(cls, data: dict | None) -> SamplingConfig:
        """Build from a bundle's `sampling` block, ignoring keys this version does not know."""
        data = dict(data or {})
        known = {k: data[k] for k in ("cfg_scale", "temperature", "top_k", "top_p") if data.get(k) is not None}
        if "top_k" in known:
            known["top_k"] = int(known["top_k"])
        return cls(**known)

    def to_dict(self) -> dict:
        return asdict(self)
