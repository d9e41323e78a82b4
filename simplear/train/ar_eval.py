"""Periodic evaluation during AR training, so a person can watch the model learn.

Three figures: validation loss (same loss as training, on held-out shards, no caption dropout),
the judge's score on a small, tag-stratified slice of the ShapesWorld prompt suite, and a PNG grid
of samples for fixed prompts (`RUN/samples/step-000500.png`). Sampling uses the reference sampler
with a fixed seed, so grids at different steps are comparable. The sampling part needs
`simplear.sampling`, `simplear.eval` and a visual tokenizer; without them it is skipped with a note
and validation loss is still reported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from simplear.train.config import EvalConfig
from simplear.utils import atomic_path
from simplear.vocab import Vocabulary


@torch.no_grad()
def validation_loss(loss_module, batches: list, device, autocast) -> float | None:
    if not batches:
        return None
    total, count = 0.0, 0
    for batch in batches:
        batch = batch.to(device)
        with autocast():
            loss_sum, n = loss_module(batch.input_ids, batch.targets, batch.image_mask)
        total, count = total + float(loss_sum), count + n
    return total / max(count, 1)


def suite_slice(config: EvalConfig) -> list[dict]:
    """`suite_prompts` lines spread evenly over the suite (the suite is ordered by tag)."""
    from simplear.eval.suite import make_suite

    suite = make_suite(config.suite_seed)
    n = min(config.suite_prompts, len(suite))
    return [suite[i * len(suite) // n] for i in range(n)] if n else []


@torch.no_grad()
def sample_images(model, vocab: Vocabulary, visual_tokenizer, prompts: list[str], grid: tuple[int, int],
                  config: EvalConfig, seed: int):
    from simplear.sampling.config import SamplingConfig
    from simplear.sampling.reference import reference_sample
    from simplear.visual_tokenizers.images import tensor_to_pil

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    result = reference_sample(
        model, [vocab.encode_prompt(p) for p in prompts], vocab.encode_unconditional(),
        visual_offset=vocab.visual_offset, codebook_size=vocab.codebook_size, num_tokens=grid[0] * grid[1],
        generator=generator, config=SamplingConfig(cfg_scale=config.cfg_scale, temperature=config.temperature),
        pad_id=vocab.pad_id,
    )
    codes = result.codes.reshape(len(prompts), *grid)
    images = visual_tokenizer.decode(codes.to(getattr(visual_tokenizer, "device", "cpu")))
    return tensor_to_pil(images.float().cpu())


def image_grid(images: list, columns: int | None = None):
    from PIL import Image

    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    w, h = images[0].size
    sheet = Image.new("RGB", (columns * w, rows * h), "white")
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * w, (i // columns) * h))
    return sheet


def evaluate(model, loss_module, vocab: Vocabulary, visual_tokenizer: Any, val_batches: list,
             grid: tuple[int, int], config: EvalConfig, step: int, run_dir: Path, device, autocast,
             write: bool = True) -> dict:
    """Run the evaluation at `step`; returns the figures (and writes the sample grid)."""
    was_training = model.training
    model.eval()
    record: dict = {"kind": "eval", "step": step}
    val = validation_loss(loss_module, val_batches, device, autocast)
    if val is not None:
        record["val_loss"] = val
    if config.samples and visual_tokenizer is not None:
        try:
            from simplear.eval.judge import judge
        except ImportError as err:  # pragma: no cover - depends on which parts are installed
            record["note"] = f"sampling evaluation skipped: {err}"
        else:
            with autocast():
                lines = suite_slice(config) if config.suite_prompts else []
                if lines:
                    images = sample_images(model, vocab, visual_tokenizer, [m["prompt"] for m in lines], grid, config, seed=1)
                    verdicts = [judge(img, meta) for img, meta in zip(images, lines)]
                    record["judge_score"] = sum(v.score for v in verdicts) / len(verdicts)
                    record["judge_correct"] = sum(v.correct for v in verdicts) / len(verdicts)
                prompts = list(config.grid_prompts) or [m["prompt"] for m in (lines or suite_slice(config))][: config.grid_size]
                if prompts:  # every FSDP rank samples (collective forwards); only `write` saves
                    grid_images = sample_images(model, vocab, visual_tokenizer, prompts, grid, config, seed=0)
                if prompts and write:
                    path = run_dir / "samples" / f"step-{step:06d}.png"
                    with atomic_path(path) as tmp:
                        image_grid(grid_images).save(tmp, format="PNG")
                    record["samples"] = str(path.relative_to(run_dir))
    if was_training:
        model.train()
    return record
