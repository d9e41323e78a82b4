"""The AR model: a stock `transformers.Qwen2ForCausalLM` over the unified vocabulary.

SimpleAR uses Qwen2.5 unchanged; only the vocabulary grows by the visual codebook. This module
builds such a model from a named size preset (from scratch) or from a Qwen2.5 folder (new rows
initialised to the mean of the existing embeddings, as SimpleAR does), and estimates its FLOPs
for throughput / MFU figures. No subclass, no vendored copy: whatever this returns is saved and
loaded by `save_pretrained` / `from_pretrained` in any tool that reads Hugging Face checkpoints.
Parallelism (DDP/FSDP) and checkpointing live in `simplear.train`, not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Qwen2Config keyword arguments per preset. `vocab_size` is always given by the caller (it is
# the Vocabulary's business).
PRESETS: dict[str, dict[str, Any]] = {
    # For tests: builds and runs a forward pass in milliseconds.
    "tiny": dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, rope_theta=10000.0,
        tie_word_embeddings=True,
    ),
    # The embedded ShapesWorld model: ~3-4M parameters without embeddings, so that a pretraining
    # stage fits in about an hour on a 2-core CPU and the shipped bundle stays small.
    "shapes": dict(
        hidden_size=256, intermediate_size=688, num_hidden_layers=5, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, rope_theta=10000.0,
        tie_word_embeddings=True,
    ),
    # Qwen2.5-0.5B's shape (what SimpleAR-0.5B is).
    "simplear-0.5b": dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
        tie_word_embeddings=True, rms_norm_eps=1e-6,
    ),
    # Qwen2.5-1.5B's shape (what SimpleAR-1.5B is).
    "simplear-1.5b": dict(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
        tie_word_embeddings=True, rms_norm_eps=1e-6,
    ),
}


def model_config(preset_or_config: str | dict | Any, vocab_size: int, **overrides: Any):
    """A `Qwen2Config` from a preset name, a dict of Qwen2Config kwargs, or a Qwen2Config."""
    from transformers import Qwen2Config

    if int(vocab_size) <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ValueError(f"unknown model preset {preset_or_config!r}; choose from {sorted(PRESETS)}")
        kwargs = dict(PRESETS[preset_or_config])
    elif isinstance(preset_or_config, dict):
        kwargs = dict(preset_or_config)
    elif isinstance(preset_or_config, Qwen2Config):
        kwargs = preset_or_config.to_dict()
        for key in ("model_type", "transformers_version", "architectures"):
            kwargs.pop(key, None)
    else:
        raise ValueError(f"expected a preset name, a dict or a Qwen2Config, got {type(preset_or_config).__name__}")
    kwargs.update(overrides)
    rope_theta = kwargs.pop("rope_theta", None)
    if rope_theta is not None and "rope_parameters" not in kwargs:
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": float(rope_theta)}
    kwargs["vocab_size"] = int(vocab_size)
    kwargs.setdefault("use_cache", True)
    config = Qwen2Config(**kwargs)
    # Always the stock class, so AutoModelForCausalLM resolves it from config.json alone.
    config.architectures = ["Qwen2ForCausalLM"]
    return config


def build_model(preset_or_config: str | dict | Any, vocab_size: int, seed: int | None = None, **overrides: Any):
    """A freshly initialised `Qwen2ForCausalLM` (fp32) with `vocab_size` rows."""
    import torch
    from transformers import Qwen2ForCausalLM

    config = model_config(preset_or_config, vocab_size, **overrides)
    if seed is not None:
        torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = None
    return model


def init_from_qwen(folder: str | Path, vocab_size: int, dtype=None):
    """Load a Qwen2 checkpoint and grow (or trim) its vocabulary to `vocab_size`.

    New rows (the visual codes) are set to the mean of the existing embedding rows, for the
    input embedding and, when untied, the output head: SimpleAR's initialisation. Rows past
    `vocab_size` (Qwen pads its matrix to 151,936) are dropped.
    """
    import torch
    from transformers import Qwen2ForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json)")
    model = Qwen2ForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    old = model.get_input_embeddings().weight.shape[0]
    mean_in = model.get_input_embeddings().weight.detach().mean(0)
    head = model.get_output_embeddings()
    mean_out = None if model.config.tie_word_embeddings else head.weight.detach().mean(0)
    model.resize_token_embeddings(int(vocab_size), mean_resizing=False)
    if vocab_size > old:
        with torch.no_grad():
            model.get_input_embeddings().weight[old:] = mean_in
            if mean_out is not None:
                model.get_output_embeddings().weight[old:] = mean_out
    model.config.vocab_size = int(vocab_size)
    model.config.architectures = ["Qwen2ForCausalLM"]
    return model


def count_parameters(model, embeddings: bool = True) -> int:
    """Unique parameters (tied weights counted once); without the embedding/head rows if asked."""
    seen, total = set(), 0
    skip = set()
    if not embeddings:
        skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    for p in model.parameters():
        if id(p) in seen or id(p) in skip:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def flops_per_token(config, seq_len: int, loss_rows: int | None = None) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), PaLM-style accounting.

    6 x (non-embedding parameters) + 12 x layers x hidden x seq_len for attention scores, plus
    6 x hidden x `loss_rows` for the output head (the trainer multiplies only the visual rows).
    """
    h, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * config.intermediate_size
    rows = config.vocab_size if loss_rows is None else loss_rows
    return 6.0 * (layers * per_layer + h * rows) + 12.0 * layers * h * seq_len
