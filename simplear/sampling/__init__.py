"""Sampling: visual codes from prompt ids. Moves token ids only; knows nothing of text.

- `config.py`: `SamplingConfig` (CFG scale, temperature, top-k, top-p), validated once.
- `logits.py`: the small pure functions of every sampling loop (restrict to the visual ids, CFG,
  temperature, top-k, top-p, draw).
- `batch.py`: CFG as one doubled, left-padded batch with masks and position ids.
- `reference.py`: `reference_sample`, the plain KV-cached loop over stock Qwen2 (source of truth).
- `engine.py`: `FastEngine`, static KV cache, visual-only head, CUDA graphs (same results).
- `triton_decode.py`: the engine's one-token step as fused Triton kernels (CUDA, 1-4 rows).
- `jacobi.py`: `jacobi_sample`, speculative Jacobi decoding (same distribution, fewer passes).
- `baseline.py`: `simplear_baseline_sample`, SimpleAR's released sampling scheme (benchmark only).
- `bench.py`: `run_sampling_benchmark`, the four samplers on one model and setting.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SamplingConfig": "simplear.sampling.config",
    "SampleResult": "simplear.sampling.result",
    "reference_sample": "simplear.sampling.reference",
    "FastEngine": "simplear.sampling.engine",
    "jacobi_sample": "simplear.sampling.jacobi",
    "simplear_baseline_sample": "simplear.sampling.baseline",
    "run_sampling_benchmark": "simplear.sampling.bench",
    "BenchConfig": "simplear.sampling.bench",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'simplear.sampling' has no attribute {name!r}")
