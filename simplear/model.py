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
    # The same parameters and FLOPs per token as "shapes" (within 3%), spent on depth: 8 layers of
    # width 192 instead of 5 of 256, for compositional prompts (counts, two objects). Through the
    # recipe's SFT stage it scored 0.247 against 0.253 (docs/benchmarks.md): the embedded model
    # keeps "shapes".
    "shapes-deep": dict(
        hidden_size=192, intermediate_size=576, num_hidden_layers=8, num_attention_heads=4,
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


VISUAL_INITS = ("random", "fsq")


def visual_code_vectors(visual_tokenizer):
    """K×d float: each visual code's point on the FSQ grid (normalised to [-1, 1] per channel).

    Our FSQ autoencoder exposes its quantiser; a tokenizer that only names its `levels` (or a
    Cosmos tokenizer, whose levels are [8, 8, 8, 5, 5, 5]) gets a quantiser of those levels.
    """
    import torch

    from simplear.visual_tokenizers.fsq import FSQ

    quantizer = getattr(visual_tokenizer, "quantizer", None)
    if quantizer is None or not hasattr(quantizer, "quantized_from_codes"):
        levels = getattr(visual_tokenizer, "levels", None)
        if levels is None:
            raise ValueError(f"model.visual_init='fsq' needs an FSQ visual tokenizer (one with FSQ levels); "
                             f"{type(visual_tokenizer).__name__} has none: use model.visual_init=random")
        quantizer = FSQ(levels)
    size = int(visual_tokenizer.codebook_size)
    if int(quantizer.codebook_size) != size:
        raise ValueError(f"FSQ levels give {quantizer.codebook_size} codes but the tokenizer has {size}")
    with torch.no_grad():
        codes = torch.arange(size).view(size, 1, 1).to(quantizer._levels.device)
        return quantizer.quantized_from_codes(codes).view(size, -1).float().cpu()


def init_visual_rows(model, visual_offset: int, code_vectors, structured: float = 0.5, bandwidth: float = 0.5,
                     seed: int = 0) -> None:
    """Give the visual rows of the embedding (and untied head) the FSQ grid's geometry.

    Each code's row becomes `std · (√structured · φ(z) + √(1 − structured) · n)`: z is its FSQ
    grid point (K×d, in [-1, 1]), φ random Fourier features of z (cos(zΩ + b), Ω ~ N(0, 1/bandwidth²),
    standardised), n a fresh N(0, 1) row and `std` the model's `initializer_range`. φ(z)·φ(z')
    approximates the Gaussian kernel exp(−|z − z'|² / 2·bandwidth²), so codes one step apart on an
    FSQ channel (whose decoded patches are alike) start close together and far codes unrelated,
    and a hidden state can score "codes near a point" with one dot product per row, as tied
    output rows must. The noise keeps every row distinct; the scale is the stock one.
    """
    import math

    import torch

    if not 0.0 <= structured <= 1.0:
        raise ValueError(f"structured must be in [0, 1], got {structured}")
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    z = torch.as_tensor(code_vectors, dtype=torch.float32)
    embedding = model.get_input_embeddings().weight
    size, hidden = z.shape[0], embedding.shape[1]
    if visual_offset + size > embedding.shape[0]:
        raise ValueError(f"{size} codes from row {visual_offset} do not fit {embedding.shape[0]} embedding rows")
    gen = torch.Generator().manual_seed(int(seed))
    omega = torch.randn(z.shape[1], hidden, generator=gen) / bandwidth
    phase = torch.rand(hidden, generator=gen) * 2 * math.pi
    features = torch.cos(z @ omega + phase)
    features = (features - features.mean(0)) / features.std().clamp_min(1e-8)
    noise = torch.randn(size, hidden, generator=gen)
    std = float(getattr(model.config, "initializer_range", 0.02))
    rows = std * (structured ** 0.5 * features + (1.0 - structured) ** 0.5 * noise)
    head = model.get_output_embeddings()
    with torch.no_grad():
        embedding[visual_offset:visual_offset + size] = rows.to(embedding)
        if head is not None and head.weight is not embedding:
            head.weight[visual_offset:visual_offset + size] = rows.to(head.weight)


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
