"""Model bundles: a Hugging Face folder plus `simplear.json` plus the visual tokenizer.

A bundle folder is loaded untouched by `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained`; `simplear.json` adds what those tools do not know (the visual
tokenizer, image size and grid, visual offset, prompt template, unconditional prompt, default
sampling settings); the visual tokenizer sits in `visual_tokenizer/` (ours) or is referenced by
path / hub id (Cosmos). Weights are safetensors only.

Released SimpleAR folders (a Qwen2 folder whose tokenizer has SimpleAR's special tokens and whose
`vocab_size = len(tokenizer) + 64000`, no `simplear.json`) load with `visual_tokenizer=...` and
then use SimpleAR's generate.py defaults. Their `generation_config.json` comes from a chat model
(repetition penalty and all); it is never applied to image tokens: the loaded model gets a
neutral generation config and the original is kept aside in `Bundle.checkpoint_generation_config`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simplear.hub import is_hub_id, resolve_path
from simplear.utils import atomic_dir, atomic_write_json, pick_device
from simplear.vocab import (
    SIMPLEAR_CODEBOOK_SIZE,
    SIMPLEAR_NEGATIVE_TEMPLATE,
    SIMPLEAR_PROMPT_TEMPLATE,
    SIMPLEAR_UNCONDITIONAL_PROMPT,
    Vocabulary,
)

BUNDLE_FILE = "simplear.json"
VISUAL_TOKENIZER_DIR = "visual_tokenizer"
FORMAT_VERSION = 1
DEFAULT_ASSET = Path(__file__).resolve().parent / "assets" / "default"
SIMPLEAR_IMAGE_SIZE = 1024
REQUIRED_KEYS = (
    "visual_tokenizer", "image_size", "grid", "visual_offset", "codebook_size",
    "prompt_template", "unconditional_prompt", "sampling",
)


@dataclass(frozen=True)
class SamplingDefaults:
    """Default sampling settings stored in a bundle (`None` = no top-k / top-p cut)."""

    cfg_scale: float = 6.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __getitem__(self, key: str):  # simplear.json readers may use either spelling
        return getattr(self, key)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BundleConfig:
    """The fields of `simplear.json`. `visual_tokenizer` is {"kind": ..., "path": ...}; a relative
    path is relative to the bundle folder."""

    visual_tokenizer: dict
    image_size: int
    grid: tuple[int, int]
    visual_offset: int
    codebook_size: int
    prompt_template: str
    unconditional_prompt: str
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    negative_template: str = "<|t2i|>{prompt}<|soi|>"
    extra: dict = field(default_factory=dict)  # provenance: recipe, run, steps ...
    format_version: int = FORMAT_VERSION

    @property
    def num_image_tokens(self) -> int:
        return int(self.grid[0]) * int(self.grid[1])

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["grid"] = [int(g) for g in self.grid]
        out["sampling"] = self.sampling.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict, source: str = BUNDLE_FILE) -> BundleConfig:
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"{source} lacks the required keys {missing}")
        vt = data["visual_tokenizer"]
        if not isinstance(vt, dict) or "kind" not in vt or "path" not in vt:
            raise ValueError(f"{source}: visual_tokenizer must be {{'kind': ..., 'path': ...}}, got {vt!r}")
        grid = data["grid"]
        if not (isinstance(grid, (list, tuple)) and len(grid) == 2):
            raise ValueError(f"{source}: grid must be [h, w], got {grid!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        sampling = SamplingDefaults(**{k: v for k, v in dict(data["sampling"]).items()
                                       if k in {f.name for f in dataclasses.fields(SamplingDefaults)}})
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs.update(grid=(int(grid[0]), int(grid[1])), sampling=sampling, visual_tokenizer=dict(vt))
        return cls(**kwargs)


@dataclass
class Bundle:
    """Everything needed to turn a prompt into an image."""

    model: Any
    vocab: Vocabulary
    visual_tokenizer: Any
    config: BundleConfig
    path: Path | None = None
    checkpoint_generation_config: Any = None

    @property
    def text_tokenizer(self):
        return self.vocab.text_tokenizer


def make_bundle_config(vocab: Vocabulary, visual_tokenizer: Any, image_size: int,
                       sampling: SamplingDefaults | None = None, visual_tokenizer_path: str | None = None,
                       **extra: Any) -> BundleConfig:
    """The `simplear.json` fields for a model trained here with `vocab` and `visual_tokenizer`."""
    down = int(visual_tokenizer.downsample)
    if image_size % down:
        raise ValueError(f"image_size {image_size} is not a multiple of the tokenizer's downsampling {down}")
    if int(visual_tokenizer.codebook_size) != vocab.codebook_size:
        raise ValueError(f"visual tokenizer has {visual_tokenizer.codebook_size} codes, vocabulary expects {vocab.codebook_size}")
    kind = str(getattr(visual_tokenizer, "kind", "fsq"))
    path = visual_tokenizer_path or (VISUAL_TOKENIZER_DIR if kind != "cosmos" else None)
    if path is None:
        raise ValueError("a Cosmos visual tokenizer is referenced, not copied: pass visual_tokenizer_path")
    return BundleConfig(
        visual_tokenizer={"kind": kind, "path": str(path)}, image_size=int(image_size),
        grid=(image_size // down, image_size // down), visual_offset=vocab.visual_offset,
        codebook_size=vocab.codebook_size, prompt_template=vocab.prompt_template,
        unconditional_prompt=vocab.unconditional_prompt, negative_template=vocab.negative_template,
        sampling=sampling or SamplingDefaults(), extra=dict(extra),
    )


def save_bundle(path: str | os.PathLike, bundle: Bundle, dtype: Any = None) -> Path:
    """Write `bundle` to the folder `path` atomically (the folder appears whole or not at all).

    `dtype` (e.g. torch.bfloat16) stores the weights in that precision: how the embedded
    default model stays small. The in-memory model is not changed.
    """
    path = Path(path)
    cfg = bundle.config
    if cfg.visual_offset != bundle.vocab.visual_offset or cfg.codebook_size != bundle.vocab.codebook_size:
        raise ValueError("bundle.config disagrees with bundle.vocab on visual_offset / codebook_size")
    if int(bundle.model.config.vocab_size) != bundle.vocab.vocab_size:
        raise ValueError(f"model has {bundle.model.config.vocab_size} rows, vocabulary needs {bundle.vocab.vocab_size}")
    model = getattr(bundle.model, "module", bundle.model)  # unwrap DDP
    with atomic_dir(path) as tmp:
        state = None
        if dtype is not None:
            state, seen = {}, set()
            for k, v in model.state_dict().items():
                if v.data_ptr() in seen:  # tied head: stored once, as save_pretrained does
                    continue
                seen.add(v.data_ptr())
                state[k] = v.to(dtype) if v.is_floating_point() else v
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state)
        if dtype is not None:
            _set_config_dtype(tmp / "config.json", dtype)
        bundle.vocab.text_tokenizer.save_pretrained(tmp)
        vt_path = cfg.visual_tokenizer["path"]
        if not Path(vt_path).is_absolute() and not is_hub_id(vt_path):
            if bundle.visual_tokenizer is None or not hasattr(bundle.visual_tokenizer, "save_pretrained"):
                raise ValueError(f"simplear.json names a bundled visual tokenizer {vt_path!r} but the "
                                 "bundle's visual tokenizer cannot save_pretrained()")
            bundle.visual_tokenizer.save_pretrained(tmp / vt_path)
        atomic_write_json(tmp / BUNDLE_FILE, cfg.to_dict())  # written last: marks a complete bundle
    return path


def _set_config_dtype(config_path: Path, dtype) -> None:
    data = json.loads(config_path.read_text())
    name = str(dtype).replace("torch.", "")
    data["dtype"] = name
    atomic_write_json(config_path, data)


def _check_hf_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a model bundle: config.json is missing")
    weights = list(path.glob("*.safetensors")) + list(path.glob("*.safetensors.index.json"))
    if not weights:
        legacy = list(path.glob("*.bin")) + list(path.glob("*.pt"))
        hint = " (found pickle weights: convert them to safetensors)" if legacy else ""
        raise FileNotFoundError(f"{path} holds no *.safetensors weights{hint}; bundles are safetensors only")
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        raise FileNotFoundError(f"{path} has no text tokenizer (tokenizer.json / tokenizer_config.json)")


def _load_model(path: Path, dtype):
    from transformers import AutoModelForCausalLM, GenerationConfig

    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, output_loading_info=True)
    problems = {k: list(v) for k, v in info.items() if k != "error_msgs" and v}
    if problems or info.get("error_msgs"):
        raise ValueError(f"strict loading of {path} failed: {problems or info['error_msgs']}")
    original = model.generation_config
    # Neutral config: nothing from a chat model's generation_config touches image tokens.
    model.generation_config = GenerationConfig()
    return model.eval(), original


def _load_visual_tokenizer(spec: Any, bundle_dir: Path, device):
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        return spec.to(device) if hasattr(spec, "to") else spec  # an already-loaded tokenizer
    from simplear.visual_tokenizers import load_visual_tokenizer

    local = bundle_dir / str(spec)
    where = local if (not Path(str(spec)).is_absolute() and local.exists()) else resolve_path(spec, "visual tokenizer")
    return load_visual_tokenizer(where, device=device)


def load_bundle(path: str | os.PathLike | None = None, visual_tokenizer: Any = None, device: Any = None,
                dtype: Any = None, load_visual: bool = True) -> Bundle:
    """Load a bundle folder (or hub id); `None` loads the embedded default model.

    `visual_tokenizer` (a folder, hub id or loaded tokenizer) overrides simplear.json's and is
    required for released SimpleAR folders. `load_visual=False` skips the visual tokenizer (the
    trainer does not need it). Every check happens before the weights are read.
    """
    import torch
    from transformers import AutoTokenizer

    if path is None:
        if not (DEFAULT_ASSET / BUNDLE_FILE).is_file():
            raise FileNotFoundError(f"this install has no embedded default model at {DEFAULT_ASSET}; pass a bundle folder")
        path = DEFAULT_ASSET
    folder = resolve_path(path, "model bundle")
    if not (folder / BUNDLE_FILE).is_file() and (folder / "bundle" / BUNDLE_FILE).is_file():
        folder = folder / "bundle"  # a training run folder: its final bundle
    _check_hf_folder(folder)
    device = pick_device(device)
    text_tokenizer = AutoTokenizer.from_pretrained(folder)

    if (folder / BUNDLE_FILE).is_file():
        config = BundleConfig.from_dict(json.loads((folder / BUNDLE_FILE).read_text()), str(folder / BUNDLE_FILE))
        vocab = Vocabulary(text_tokenizer, config.codebook_size, config.prompt_template,
                           config.unconditional_prompt, config.negative_template)
        if vocab.visual_offset != config.visual_offset:
            raise ValueError(f"{folder}: tokenizer gives visual_offset {vocab.visual_offset}, simplear.json says {config.visual_offset}")
        vt_spec = visual_tokenizer if visual_tokenizer is not None else config.visual_tokenizer["path"]
    else:
        # A released SimpleAR checkpoint: its generate.py settings, a Cosmos tokenizer from the user.
        if visual_tokenizer is None:
            raise ValueError(f"{folder} has no {BUNDLE_FILE}: a released SimpleAR folder needs "
                             "visual_tokenizer=COSMOS_FOLDER (--visual-tokenizer on the command line)")
        vt_spec, config = visual_tokenizer, None
        vocab = None

    vt = _load_visual_tokenizer(vt_spec, folder, device) if (load_visual or config is None) else None
    if config is None:
        codebook = int(vt.codebook_size)
        if codebook != SIMPLEAR_CODEBOOK_SIZE:
            raise ValueError(f"released SimpleAR models use a {SIMPLEAR_CODEBOOK_SIZE}-code tokenizer, got {codebook}")
        vocab = Vocabulary(text_tokenizer, codebook, SIMPLEAR_PROMPT_TEMPLATE, SIMPLEAR_UNCONDITIONAL_PROMPT,
                           SIMPLEAR_NEGATIVE_TEMPLATE)
        grid = SIMPLEAR_IMAGE_SIZE // int(vt.downsample)
        config = BundleConfig(
            visual_tokenizer={"kind": str(getattr(vt, "kind", "cosmos")), "path": str(visual_tokenizer)
                              if isinstance(visual_tokenizer, (str, os.PathLike)) else "<in memory>"},
            image_size=SIMPLEAR_IMAGE_SIZE, grid=(grid, grid), visual_offset=vocab.visual_offset,
            codebook_size=codebook, prompt_template=SIMPLEAR_PROMPT_TEMPLATE,
            unconditional_prompt=SIMPLEAR_UNCONDITIONAL_PROMPT, negative_template=SIMPLEAR_NEGATIVE_TEMPLATE,
            sampling=SamplingDefaults(cfg_scale=6.0, temperature=1.0, top_k=None, top_p=None),
            extra={"source": "released SimpleAR checkpoint"},
        )
    if vt is not None and int(vt.codebook_size) != config.codebook_size:
        raise ValueError(f"visual tokenizer has {vt.codebook_size} codes; {folder} expects {config.codebook_size}")

    model_vocab = int(json.loads((folder / "config.json").read_text()).get("vocab_size", -1))
    if model_vocab != vocab.vocab_size:
        raise ValueError(f"{folder}: model vocab_size {model_vocab} != len(tokenizer) {vocab.visual_offset} "
                         f"+ codebook {vocab.codebook_size} = {vocab.vocab_size}")
    model, original_gen = _load_model(folder, dtype or torch.float32)
    return Bundle(model=model.to(device), vocab=vocab, visual_tokenizer=vt, config=config, path=folder,
                  checkpoint_generation_config=original_gen)
