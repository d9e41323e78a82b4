"""Typed, frozen configs for the AR trainer (pretraining and SFT are one loop) and named recipes.

Defaults run small on a laptop CPU; the named recipes hold the real runs:
- `shapes-pretrain` / `shapes-sft`: the embedded ShapesWorld model (64 px, then 128 px), sized to
  train on a 2-core CPU within about an hour per stage.
- `simplear-0.5b-pretrain` / `simplear-0.5b-sft`: the paper's settings (512 px with sequence
  length 1,536, then 1,024 px with 4,608; AdamW, lr 1e-4 constant, weight decay 0.01), for GPUs.

Overrides are `section.field=value` strings (`optim.lr=3e-4`, `max_steps=100`), typed by the
dataclass fields, so the CLI never re-declares a flag. The library never reads `sys.argv`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from simplear.model import VISUAL_INITS
from simplear.utils import check_precision


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "tiny"  # simplear.model.PRESETS name, used when not initialising from a checkpoint
    init_from: str | None = None  # a run folder, a bundle folder, or a Qwen2.5 folder
    context: int | None = None  # max sequence length; None = the model's max_position_embeddings
    gradient_checkpointing: bool = False
    # How a new model's visual embedding rows start: "random" (the stock init; SimpleAR's mean
    # rows for a Qwen folder) or "fsq" (rows that follow the FSQ code grid, simplear.model.init_visual_rows)
    visual_init: str = "random"


@dataclass(frozen=True)
class DataConfig:
    shards: tuple[str, ...] = ()  # token shard folders (a mixture spec each, see TokenShardDataset)
    val_shards: tuple[str, ...] = ()  # held-out shards for validation loss and nothing else
    visual_tokenizer: str | None = None  # the tokenizer the shards were made with (checked)
    resolution: int | None = None  # image size the shards must hold (checked)
    caption_dropout: float = 0.1  # SimpleAR drops the caption with p = 0.1 so CFG has a branch to learn
    caption_choice: str = "random"  # "random": any of an image's captions (short or long); "first"
    # Fraction of the image codes fed as inputs that are swapped for another code drawn uniformly,
    # while every target stays the true next code: the model learns to continue from codes that
    # are not quite the data's, as its own sampled codes are not (exposure bias). 0 = off.
    input_noise: float = 0.0
    text_tokenizer: str | None = None  # a tokenizer folder; None = train one on the captions
    text_vocab_size: int = 512


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    schedule: str = "constant"  # "constant" | "cosine" (both after a linear warmup)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping


@dataclass(frozen=True)
class EvalConfig:
    every: int = 0  # evaluate every N optimiser steps (and at the end); 0 = only at the end
    val_batches: int = 4  # validation loss over this many micro-batches of val_shards
    suite_seed: int = 0  # simplear.eval.suite.make_suite(seed)
    suite_prompts: int = 8  # judge score over this many suite prompts (0 = skip)
    grid_prompts: tuple[str, ...] = ()  # fixed prompts for the PNG grid (empty = the first suite prompts)
    grid_size: int = 4
    cfg_scale: float = 3.0
    temperature: float = 1.0
    samples: bool = True  # sampling-based evaluation (judge + grid); needs simplear.sampling


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    batch_size: int = 8  # global batch (sequences per optimiser step, all processes together)
    micro_batch_size: int = 8  # sequences per forward pass per process (accumulation fills the rest)
    max_steps: int = 100
    stop_after: int | None = None  # leave the loop after this step (the schedule still uses max_steps)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    precision: str = "auto"  # "auto" (bf16 autocast on GPU and bf16-capable CPUs, else fp32) | "fp32" | "bf16"
    device: str | None = None
    parallel: str = "ddp"  # under torchrun: "ddp" or "fsdp" (FSDP2 per decoder layer, for 0.5B/1.5B)
    text_loss_weight: float = 0.0  # 0 = loss on image tokens only (SimpleAR's choice)
    loss_chunk: int = 2048  # positions per chunk of the visual-head loss
    bundle_dtype: str = "float32"  # precision of RUN/bundle weights ("bfloat16" halves the size)
    progress: bool = True
    tensorboard: bool = False  # also write RUN/tensorboard/ when tensorboard is installed
    threads: int | None = None  # torch CPU threads; on a busy 2-core box 1 thread beat 2 by 3x
    # torch.compile the loss module (decoder + visual-head loss) in place: fused elementwise work
    # around the matrix products; state-dict keys, checkpoints and bundles are unchanged.
    compile: bool = False

    def __post_init__(self):
        if self.batch_size <= 0 or self.micro_batch_size <= 0 or self.max_steps <= 0:
            raise ValueError("batch_size, micro_batch_size and max_steps must be positive")
        if not 0.0 <= self.data.caption_dropout <= 1.0:
            raise ValueError(f"data.caption_dropout must be in [0, 1], got {self.data.caption_dropout}")
        if self.model.visual_init not in VISUAL_INITS:
            raise ValueError(f"model.visual_init must be one of {VISUAL_INITS}, got {self.model.visual_init!r}")
        if not 0.0 <= self.data.input_noise < 1.0:
            raise ValueError(f"data.input_noise must be in [0, 1), got {self.data.input_noise}")
        if self.data.caption_choice not in ("random", "first"):
            raise ValueError(f"data.caption_choice must be 'random' or 'first', got {self.data.caption_choice!r}")
        if self.optim.schedule not in ("constant", "cosine"):
            raise ValueError(f"optim.schedule must be 'constant' or 'cosine', got {self.optim.schedule!r}")
        check_precision(self.precision)
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")
        if self.bundle_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"bundle_dtype must be float32, bfloat16 or float16, got {self.bundle_dtype!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return _from_dict(cls, data)


def _from_dict(cls, data: dict):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _coerce(text: str, hint: Any, key: str):
    """Parse an override string into the field's type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if text.lower() in ("none", "null") and (hint is type(None) or type(None) in args):
        return None
    if args and type(None) in args:  # Optional[X]
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if origin is tuple:
            return tuple(p for p in text.split(",") if p) if text else ()
        if hint is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if hint in (int, float, str):
            return hint(float(text)) if hint is int and "e" in text.lower() else hint(text)
    except ValueError:
        raise ValueError(f"override {key}={text!r}: expected {getattr(hint, '__name__', hint)}") from None
    raise ValueError(f"override {key}: cannot parse a {hint}")


def apply_overrides(config: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """Apply `section.field=value` (or `field=value`) strings to a config; unknown keys are errors."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. optim.lr=3e-4)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        config = _replace_path(config, parts, text.strip(), key)
    return config


def _replace_path(obj, parts: list[str], text: str, key: str):
    hints = typing.get_type_hints(type(obj))
    name = parts[0]
    if name not in hints:
        valid = sorted(hints)
        raise ValueError(f"unknown config key {key!r}; {type(obj).__name__} has {valid}")
    if len(parts) == 1:
        if dataclasses.is_dataclass(hints[name]):
            raise ValueError(f"{key!r} is a section; set one of its fields, e.g. {key}.<field>=...")
        return replace(obj, **{name: _coerce(text, hints[name], key)})
    child = getattr(obj, name)
    if not dataclasses.is_dataclass(child):
        raise ValueError(f"{'.'.join(parts[:1])!r} in {key!r} is not a section")
    return replace(obj, **{name: _replace_path(child, parts[1:], text, key)})


# ---- named recipes ------------------------------------------------------------------------------

def _shapes_pretrain() -> TrainConfig:
    # 64 px ShapesWorld images (8x8 codes with an 8x-downsampling FSQ), ~20-token captions.
    return TrainConfig(
        recipe="shapes-pretrain",
        model=ModelConfig(preset="shapes", context=256),
        data=DataConfig(shards=("data/shapes-64-tokens",), val_shards=("data/shapes-64-val-tokens",),
                        visual_tokenizer="data/fsq-tokenizer", resolution=64, text_vocab_size=512),
        optim=OptimConfig(lr=1e-3, weight_decay=0.01, warmup_steps=100, schedule="cosine", min_lr_ratio=0.1),
        eval=EvalConfig(every=400, suite_prompts=16),
        # 2,000 x 32 sequences of 83 tokens = 5.3M tokens: 15 minutes with its evaluations on the
        # 2-core CPU under bf16 autocast (precision "auto" on a CPU with AVX512-BF16), where 1,330
        # steps took about 21 minutes in float32 (2026-11-24, docs/benchmarks.md). Batches of 32
        # ended better at every stage than the 64 used until 2026-11-24. The 128-px SFT stage, not
        # this one, draws the shapes the judge reads: it gets the larger share.
        batch_size=32, micro_batch_size=32, max_steps=2000, checkpoint_every=100, log_every=10,
    )


def _shapes_sft() -> TrainConfig:
    # 128 px (16x16 codes), initialised from the pretraining run.
    return TrainConfig(
        recipe="shapes-sft",
        model=ModelConfig(preset="shapes", context=320),
        data=DataConfig(shards=("data/shapes-128-tokens",), val_shards=("data/shapes-128-val-tokens",),
                        visual_tokenizer="data/fsq-tokenizer", resolution=128),
        optim=OptimConfig(lr=5e-4, weight_decay=0.01, warmup_steps=50, schedule="cosine", min_lr_ratio=0.1),
        eval=EvalConfig(every=400, suite_prompts=16),
        # 3,500 x 16 sequences of 275 tokens = 15.4M tokens: 52 minutes with its evaluations and
        # sampling sweep under bf16 autocast on the idle 2-core CPU. On one tokenizer 2,800 steps
        # judged 0.371 and 4,000 judged 0.409 (CFG 2.0), but with 4,000 the whole recipe took 120.2
        # minutes; with 3,500 the plain recipe command ran from scratch in 111.7 minutes
        # (2026-11-25, docs/benchmarks.md). Batches of 16 learn more per sequence than 32.
        batch_size=16, micro_batch_size=16, max_steps=3500, checkpoint_every=100, log_every=10,
        bundle_dtype="bfloat16",
    )


def _simplear_05b(stage: str) -> TrainConfig:
    # The paper: 512 px / 1,536 tokens, then 1,024 px / 4,608 tokens; AdamW lr 1e-4 constant, wd 0.01.
    pre = stage == "pretrain"
    return TrainConfig(
        recipe=f"simplear-0.5b-{stage}",
        model=ModelConfig(preset="simplear-0.5b", context=1536 if pre else 4608, gradient_checkpointing=not pre),
        data=DataConfig(shards=("data/pretrain-512-tokens",) if pre else ("data/sft-1024-tokens",),
                        visual_tokenizer="nvidia/Cosmos-1.0-Tokenizer-DV8x16x16", resolution=512 if pre else 1024),
        optim=OptimConfig(lr=1e-4, weight_decay=0.01, schedule="constant", warmup_steps=0),
        eval=EvalConfig(every=2000, cfg_scale=6.0),
        batch_size=256 if pre else 128, micro_batch_size=8 if pre else 2, max_steps=100_000 if pre else 20_000,
        checkpoint_every=1000, log_every=10, precision="auto", parallel="fsdp", loss_chunk=1024,
    )


RECIPES = {
    "shapes-pretrain": _shapes_pretrain,
    "shapes-sft": _shapes_sft,
    "simplear-0.5b-pretrain": lambda: _simplear_05b("pretrain"),
    "simplear-0.5b-sft": lambda: _simplear_05b("sft"),
}


def recipe(name: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The named recipe with `overrides` applied."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    return apply_overrides(RECIPES[name](), overrides)


def config_json(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), indent=2)
