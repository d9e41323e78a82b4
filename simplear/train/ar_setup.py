"""Everything the AR trainer checks and builds before its first step.

The visual tokenizer the shards were made with, the datasets, the text tokenizer and vocabulary,
and the model (from scratch, from a previous run's bundle, or from a Qwen2.5 folder). Every
mismatch is found here, before any training step: shards from another visual tokenizer or
resolution, a model whose vocabulary disagrees with the data, a caption that cannot fit in the
context beside the image, a missing file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simplear.train.config import TrainConfig
from simplear.vocab import Vocabulary, add_simplear_special_tokens, train_text_tokenizer


@dataclass
class Setup:
    vocab: Vocabulary
    model: Any
    visual_tokenizer: Any
    dataset: Any
    val_dataset: Any
    grid: tuple[int, int]
    context: int
    init_source: str  # "scratch" | "bundle:PATH" | "qwen:PATH" | "resume"


def load_visual(config: TrainConfig, visual_tokenizer: Any = None):
    if visual_tokenizer is not None:
        return visual_tokenizer
    if not config.data.visual_tokenizer:
        raise ValueError("data.visual_tokenizer is required: shards are checked against it and the run's "
                         "bundle ships it (data.visual_tokenizer=FOLDER)")
    from simplear.hub import resolve_path
    from simplear.visual_tokenizers import load_visual_tokenizer

    return load_visual_tokenizer(resolve_path(config.data.visual_tokenizer, "visual tokenizer"))


def load_shards(specs: tuple[str, ...], visual_tokenizer: Any, resolution: int | None, what: str, seed: int = 0):
    """A `TokenShardDataset` over shard folders, each `DIR` or `DIR@STRATEGY` (`all`, `first:N`,
    `end:N`, `random:N`, `N%`); the data module checks the tokenizer and resolution."""
    if not specs:
        return None
    if not resolution:
        raise ValueError("data.resolution is required with token shards (they are checked against it)")
    from simplear.data.token_dataset import TokenShardDataset, parse_source

    try:
        return TokenShardDataset([parse_source(s) for s in specs], visual_tokenizer=visual_tokenizer,
                                 resolution=int(resolution), seed=seed)
    except (ValueError, FileNotFoundError) as err:
        raise type(err)(f"{what} shards: {err}") from err


def dataset_captions(dataset) -> list[list[str]]:
    """All captions of a dataset, without decoding codes when the dataset exposes them."""
    for attr in ("captions", "all_captions"):
        value = getattr(dataset, attr, None)
        if callable(value):
            value = value()
        if value is not None and len(value) == len(dataset):
            return [list(c) for c in value]
    return [list(dataset[i]["captions"]) for i in range(len(dataset))]


def resolve_init(init_from: str) -> tuple[str, Path]:
    """("bundle", folder) for a run or bundle folder, ("qwen", folder) for a plain Qwen2 folder."""
    from simplear.bundle import BUNDLE_FILE
    from simplear.hub import resolve_path

    folder = resolve_path(init_from, "--init-from model")
    if (folder / "bundle" / BUNDLE_FILE).is_file():
        return "bundle", folder / "bundle"
    if (folder / BUNDLE_FILE).is_file():
        return "bundle", folder
    if (folder / "config.json").is_file():
        return "qwen", folder
    if (folder / "checkpoints").is_dir():
        raise FileNotFoundError(f"run {folder} has no bundle yet (it did not finish); resume it first")
    raise FileNotFoundError(f"{folder} is neither a run folder, a bundle, nor a Hugging Face model folder")


def _check_same_visual_tokenizer(bundle_dir: Path, visual_tokenizer: Any) -> None:
    """The model being fine-tuned must have learnt the codes of the tokenizer the shards use."""
    from simplear.bundle import load_bundle

    ref = load_bundle(bundle_dir, device="cpu", load_visual=True).visual_tokenizer
    a = getattr(ref, "codes_fingerprint", None)
    b = getattr(visual_tokenizer, "codes_fingerprint", None)
    if a is not None and b is not None and a() != b():  # a decoder of its own (--freeze-encoder) is fine
        raise ValueError(f"the model in {bundle_dir} was trained with another visual tokenizer than "
                         "data.visual_tokenizer (their encoders differ): its codes would mean other things")


def build_vocab_and_model(config: TrainConfig, visual_tokenizer: Any, captions: list[list[str]],
                          run_dir: Path, resume: bool):
    """(vocab, model, init_source). On resume, the run's own saved tokenizer is reused."""
    import torch
    from transformers import AutoTokenizer

    from simplear.model import build_model, init_from_qwen

    codebook = int(visual_tokenizer.codebook_size)
    tok_dir = run_dir / "tokenizer"
    init = config.model.init_from
    kind, folder = resolve_init(init) if init else ("scratch", None)
    if kind == "bundle":
        from simplear.bundle import load_bundle

        if config.model.visual_init != "random":
            raise ValueError(f"model.visual_init={config.model.visual_init!r} sets up a new model's visual rows; "
                             f"--init-from {folder} is a trained bundle whose rows are kept: drop the override")

        if not resume:
            _check_same_visual_tokenizer(folder, visual_tokenizer)
        bundle = load_bundle(folder, device="cpu", load_visual=False, dtype=torch.float32)
        if bundle.vocab.codebook_size != codebook:
            raise ValueError(f"--init-from {folder} has {bundle.vocab.codebook_size} visual codes but the shards' "
                             f"visual tokenizer has {codebook}")
        vocab = Vocabulary(bundle.text_tokenizer, codebook, bundle.config.prompt_template,
                           bundle.config.unconditional_prompt, bundle.config.negative_template)
        return vocab, bundle.model.float(), f"bundle:{folder}"
    if resume and tok_dir.is_dir():
        text_tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    elif kind == "qwen":
        text_tokenizer = AutoTokenizer.from_pretrained(folder)
        add_simplear_special_tokens(text_tokenizer)
    elif config.data.text_tokenizer:
        from simplear.hub import resolve_path

        text_tokenizer = AutoTokenizer.from_pretrained(resolve_path(config.data.text_tokenizer, "text tokenizer"))
        add_simplear_special_tokens(text_tokenizer)
    else:
        # Our models: a small BPE trained on the training captions (all of ShapesWorld's words).
        text_tokenizer = train_text_tokenizer((c for caps in captions for c in caps), config.data.text_vocab_size)
    vocab = Vocabulary(text_tokenizer, codebook)
    if kind == "qwen":
        model, source = init_from_qwen(folder, vocab.vocab_size), f"qwen:{folder}"
    else:
        model, source = build_model(config.model.preset, vocab.vocab_size, seed=config.seed), "scratch"
    if config.model.visual_init == "fsq":
        from simplear.model import init_visual_rows, visual_code_vectors

        init_visual_rows(model, vocab.visual_offset, visual_code_vectors(visual_tokenizer), seed=config.seed)
    return vocab, model, source


def grid_of(dataset) -> tuple[int, int]:
    codes = dataset[0]["codes"]
    if codes.ndim != 2:
        raise ValueError(f"dataset items must hold h x w codes, got shape {tuple(codes.shape)}")
    return int(codes.shape[0]), int(codes.shape[1])


def check_resume_config(saved_path: Path, config: TrainConfig) -> None:
    """Refuse to resume with settings that change what is trained (logging and stopping may differ)."""
    saved = json.loads(saved_path.read_text())
    try:  # fields added since the run started take their defaults, as the saved config would load
        saved = TrainConfig.from_dict(saved).to_dict()
    except (TypeError, ValueError):
        pass  # keys this version no longer knows: compared as they are, so they show as changed
    now = config.to_dict()
    free = {"stop_after", "progress", "log_every", "checkpoint_every", "keep_checkpoints", "device", "eval",
            "compile", "threads", "tensorboard"}
    changed = sorted(k for k in now if k not in free and json.dumps(now[k]) != json.dumps(saved.get(k)))
    if changed:
        raise ValueError(f"--resume with a different config ({changed} changed from {saved_path}); "
                         "resume with the saved settings or start a new --out folder")
