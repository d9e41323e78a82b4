"""Benchmark exports: GenEval's folder layout and DPG-Bench's 2x2 grids, for any model.

GenEval (github.com/djghosh13/geneval) scores a folder with one sub-folder per prompt line,
numbered from 00000 in file order, each holding `metadata.jsonl` (the prompt's line, verbatim)
and `samples/0000.png ...`. DPG-Bench (github.com/TencentQQGYLab/ELLA) scores one PNG per prompt,
`<id>.png`, holding four samples of resolution R in a 2x2 grid (2R x 2R), and must be told R.

Both writers work with any pipeline (ShapesWorld models, released SimpleAR checkpoints) and any
prompt file in the benchmark's schema. Every image has its own seed derived from (seed, prompt
index, sample index), so results do not depend on the batch size, and a run that was stopped
resumes: each prompt's folder or grid is written atomically and complete ones are skipped.
Scoring is not done here: GenEval's real prompts need GenEval's own detector; ShapesWorld
prompts are scored by `simplear.eval.score` (the CLI does that when it can).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simplear.utils import atomic_dir, atomic_path, iter_jsonl

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class ExportConfig:
    """Sampling and batching for an export; `None` sampling values keep the model's defaults."""

    images_per_prompt: int = 4
    seed: int = 0
    batch_size: int = 8  # images per pipeline call
    limit: int | None = None  # only the first N prompts
    image_size: int | None = None
    cfg_scale: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    sampler: str = "ar"

    def __post_init__(self):
        if self.images_per_prompt < 1:
            raise ValueError(f"images_per_prompt must be >= 1, got {self.images_per_prompt}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class PromptLine:
    """One line of a prompt file: its text as written and the parsed object."""

    raw: str
    data: dict

    @property
    def prompt(self) -> str:
        return self.data["prompt"]


def read_prompt_file(path: str | os.PathLike, required: tuple[str, ...] = ("prompt",)) -> list[PromptLine]:
    """Read a JSONL prompt file (one object a line with a string `prompt`), keeping each raw line."""
    path = Path(path)
    lines = []
    for lineno, data, text in iter_jsonl(path, what="prompt file", with_text=True):
        for key in required:
            if key not in data:
                raise ValueError(f"{path}:{lineno}: missing the key {key!r}")
        if not isinstance(data["prompt"], str) or not data["prompt"].strip():
            raise ValueError(f"{path}:{lineno}: 'prompt' must be a non-empty string")
        lines.append(PromptLine(raw=text, data=data))
    if not lines:
        raise ValueError(f"{path} holds no prompts")
    return lines


def image_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of one image: a hash of (seed, prompt, sample), independent of batching."""
    return int(np.random.SeedSequence([seed, prompt_index, sample_index]).generate_state(1, np.uint32)[0])


def _generate(pipeline, prompts: list[str], seeds: list[int], config: ExportConfig,
              totals: dict | None = None) -> list:
    out = pipeline(
        prompts, num_images=1, image_size=config.image_size, cfg_scale=config.cfg_scale,
        temperature=config.temperature, top_k=config.top_k, top_p=config.top_p, seed=seeds,
        sampler=config.sampler,
    )
    images = list(out.images)
    if len(images) != len(prompts):
        raise RuntimeError(f"pipeline returned {len(images)} images for {len(prompts)} prompts")
    if totals is not None:
        stats = getattr(out, "stats", None) or {}
        for key in ("tokens", "forward_passes", "sampling_seconds"):
            if key in stats:
                totals[key] = totals.get(key, 0) + stats[key]
        totals["images"] = totals.get("images", 0) + len(images)
    return images


def sampling_summary(totals: dict) -> dict:
    """Image tokens per forward pass of the decoding loop (a batch's pass counting once) and
    seconds per image, over every sampler call of an export."""
    out = {"images": totals.get("images", 0)}
    if totals.get("forward_passes"):
        out["tokens_per_forward"] = totals["tokens"] / totals["forward_passes"]
    if "sampling_seconds" in totals and out["images"]:
        out["seconds_per_image"] = totals["sampling_seconds"] / out["images"]
    return out


def _generate_all(pipeline, todo: list[tuple[int, str]], config: ExportConfig,
                  emit: Callable[[int, list], None], progress: Callable[[int, int], None] | None,
                  totals: dict | None = None) -> None:
    """Generate K images for each (index, prompt) in `todo`, `batch_size` images per call, and
    hand each prompt's K images to `emit` as soon as they are all made."""
    k = config.images_per_prompt
    jobs = [(i, prompt, s) for i, prompt in todo for s in range(k)]
    pending: dict[int, list] = {}
    for start in range(0, len(jobs), config.batch_size):
        chunk = jobs[start : start + config.batch_size]
        images = _generate(pipeline, [p for _, p, _ in chunk],
                           [image_seed(config.seed, i, s) for i, _, s in chunk], config, totals)
        for (i, _, _), image in zip(chunk, images):
            pending.setdefault(i, []).append(image)
            if len(pending[i]) == k:
                emit(i, pending.pop(i))
        if progress is not None:
            progress(min(start + config.batch_size, len(jobs)), len(jobs))


def _geneval_done(folder: Path, line: PromptLine, k: int) -> bool:
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        return False
    if meta.read_text(encoding="utf-8").strip() != line.raw:
        raise ValueError(
            f"{folder} holds another prompt than line {int(folder.name) + 1} of this file; "
            "export into a new folder (or delete this one)"
        )
    return all((folder / "samples" / f"{s:04d}.png").is_file() for s in range(k))


def export_geneval(pipeline, prompts_path: str | os.PathLike, out_dir: str | os.PathLike,
                   config: ExportConfig | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Write GenEval's layout for the prompts of `prompts_path` into `out_dir`; returns a summary."""
    config = config or ExportConfig()
    lines = read_prompt_file(prompts_path)[: config.limit]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    k = config.images_per_prompt
    todo = [(i, line.prompt) for i, line in enumerate(lines) if not _geneval_done(out / f"{i:05d}", line, k)]

    def emit(i: int, images: list) -> None:
        with atomic_dir(out / f"{i:05d}") as tmp:
            (tmp / "samples").mkdir()
            (tmp / "metadata.jsonl").write_text(lines[i].raw + "\n", encoding="utf-8")
            for s, image in enumerate(images):
                image.save(tmp / "samples" / f"{s:04d}.png")
            make_grid(images).save(tmp / "grid.png")

    totals: dict = {}
    _generate_all(pipeline, todo, config, emit, progress, totals)
    return {"out": str(out), "prompts": len(lines), "images_per_prompt": k,
            "generated_prompts": len(todo), "skipped_prompts": len(lines) - len(todo),
            "sampling": sampling_summary(totals)}


def make_grid(images: list, columns: int | None = None):
    """Paste equal-size images into a grid (row-major); 4 images -> 2x2."""
    from PIL import Image

    if not images:
        raise ValueError("make_grid needs at least one image")
    width, height = images[0].size
    if any(im.size != (width, height) for im in images):
        raise ValueError(f"all images must have the same size, got {sorted({im.size for im in images})}")
    columns = columns or int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / columns))
    grid = Image.new("RGB", (columns * width, rows * height))
    for n, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((n % columns) * width, (n // columns) * height))
    return grid


def export_dpg(pipeline, prompts_path: str | os.PathLike, out_dir: str | os.PathLike,
               config: ExportConfig | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict:
    """Write DPG-Bench's `<id>.png` 2x2 grids for the `{"id", "prompt"}` lines of `prompts_path`.

    Returns a summary whose `resolution` is R, the size of one sample, which DPG-Bench's scorer
    must be given (`--resolution R`) to cut the grids apart.
    """
    config = config or ExportConfig()
    if config.images_per_prompt != 4:
        raise ValueError(f"DPG-Bench grids hold exactly 4 samples, got images_per_prompt={config.images_per_prompt}")
    lines = read_prompt_file(prompts_path, required=("id", "prompt"))[: config.limit]
    ids = [str(line.data["id"]) for line in lines]
    for i, ident in enumerate(ids):
        if not SAFE_ID.match(ident) or ident in (".", ".."):
            raise ValueError(f"line {i + 1}: id {ident!r} cannot be a file name (letters, digits, . _ - only)")
    dupes = sorted({x for x in ids if ids.count(x) > 1})
    if dupes:
        raise ValueError(f"duplicate ids in {prompts_path}: {dupes[:5]}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    todo = [(i, line.prompt) for i, line in enumerate(lines) if not (out / f"{ids[i]}.png").is_file()]
    sizes: set = set()

    def emit(i: int, images: list) -> None:
        sizes.add(images[0].size)
        with atomic_path(out / f"{ids[i]}.png") as tmp:
            make_grid(images, columns=2).save(tmp, format="PNG")

    _generate_all(pipeline, todo, config, emit, progress)
    if not sizes:  # everything was already there: read R back from one grid
        from PIL import Image

        with Image.open(out / f"{ids[0]}.png") as grid:
            sizes.add((grid.width // 2, grid.height // 2))
    if len(sizes) != 1:
        raise RuntimeError(f"samples of different sizes in one export: {sorted(sizes)}")
    (width, height), = sizes
    return {"out": str(out), "prompts": len(lines), "generated_prompts": len(todo),
            "skipped_prompts": len(lines) - len(todo), "resolution": width}


def shapes_prompts(prompts_path: str | os.PathLike) -> tuple[bool, str]:
    """Whether every line is in ShapesWorld's vocabulary (so the judge can score the export);
    the second value says why not."""
    from simplear.eval.suite import load_prompts

    try:
        load_prompts(prompts_path)
    except ValueError as err:
        return False, str(err)
    return True, ""
