"""simplear: autoregressive text-to-image generation with a plain decoder-only transformer.

Implements SimpleAR (Wang et al., arXiv 2504.11455). Importing this package has no side
effects and does not import torch; the public names below load on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Pipeline": "simplear.pipeline",
    "PipelineOutput": "simplear.pipeline",
    "load_visual_tokenizer": "simplear.visual_tokenizers",
    "Vocabulary": "simplear.vocab",
    "load_bundle": "simplear.bundle",
    "save_bundle": "simplear.bundle",
    "Bundle": "simplear.bundle",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'simplear' has no attribute {name!r}")
