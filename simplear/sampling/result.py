"""What every sampler returns: the codes and the counters of how they were made."""

from __future__ import annotations

from typing import NamedTuple

import torch


class SampleResult(NamedTuple):
    """`codes`: long B×num_tokens visual codes. `stats`: `forward_passes` (a CFG pair counts as
    one; the prompt prefill counts as one), `tokens` (image tokens per image), `seconds`, and
    sampler-specific extras (e.g. Jacobi's `tokens_per_forward`)."""

    codes: torch.Tensor
    stats: dict
