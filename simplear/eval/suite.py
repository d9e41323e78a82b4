"""The ShapesWorld prompt suite in GenEval's schema, its ground-truth renders, and prompt files.

`make_suite(seed)` gives 553 prompts with GenEval's tag proportions (80 single_object,
99 two_object, 80 counting, 94 colors, 100 position, 100 color_attr), in GenEval's order
and canonical phrasings. It is balanced rather than purely random: every class appears in
single_object, every (class, count) in counting, and every one of the 60 (colour, class) pairs
in colors, so held-out pairs are always measured. Lines that use a held-out (colour, class)
pair carry the extra key `"heldout": true`.

`render_suite` writes GenEval's folder layout (`DIR/00000/metadata.jsonl`,
`DIR/00000/samples/0000.png`) with ground-truth renders: the judge's calibration input.
`load_prompts` reads a prompt JSONL and checks it against ShapesWorld's vocabulary.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from pathlib import Path

import numpy as np

from simplear.data.captions import canonical_prompt
from simplear.data.shapes import (
    CLASSES,
    COLORS,
    DEFAULT_HELDOUT,
    RELATIONS,
    TAGS,
    ShapesConfig,
    render_scene,
    scene_from_metadata,
    validate_metadata,
)
from simplear.utils import atomic_dir, atomic_write_text, iter_jsonl

# GenEval's prompts per tag (553 in all), in the order its file lists them.
GENEVAL_TAG_COUNTS = {
    "single_object": 80,
    "two_object": 99,
    "counting": 80,
    "colors": 94,
    "position": 100,
    "color_attr": 100,
}


def _cycle(rng: np.random.Generator, combos: list, n: int) -> list:
    """n items covering `combos` as evenly as possible (each full pass shuffled)."""
    out: list = []
    while len(out) < n:
        out += [combos[i] for i in rng.permutation(len(combos))]
    return out[:n]


def _line(tag: str, include: list[dict], exclude: list[dict] | None, heldout: set) -> dict:
    line = {"tag": tag, "include": include}
    if exclude is not None:
        line["exclude"] = exclude
    line["prompt"] = canonical_prompt(line)
    if any((c.get("color"), c["class"]) in heldout for c in include):
        line["heldout"] = True
    return line


def make_suite(seed: int = 0, heldout=DEFAULT_HELDOUT) -> list[dict]:
    """553 GenEval-schema prompt lines for ShapesWorld, deterministic by `seed`."""
    rng = np.random.default_rng(seed)
    held = {(str(c), str(k)) for c, k in heldout}
    ShapesConfig(heldout=tuple(held))  # validates the pairs' words
    n = GENEVAL_TAG_COUNTS
    pairs = list(itertools.permutations(CLASSES, 2))  # ordered, distinct classes
    lines: list[dict] = []
    for cls in _cycle(rng, list(CLASSES), n["single_object"]):
        lines.append(_line("single_object", [{"class": cls, "count": 1}], None, held))
    for a, b in _cycle(rng, pairs, n["two_object"]):
        lines.append(_line("two_object", [{"class": a, "count": 1}, {"class": b, "count": 1}], None, held))
    for cls, count in _cycle(rng, list(itertools.product(CLASSES, (2, 3, 4))), n["counting"]):
        include = [{"class": cls, "count": count}]
        lines.append(_line("counting", include, [{"class": cls, "count": count + 1}], held))
    for color, cls in _cycle(rng, list(itertools.product(COLORS, CLASSES)), n["colors"]):
        lines.append(_line("colors", [{"class": cls, "count": 1, "color": color}], None, held))
    for (ref, placed), rel in _cycle(rng, list(itertools.product(pairs, RELATIONS)), n["position"]):
        include = [{"class": ref, "count": 1}, {"class": placed, "count": 1, "position": [rel, 0]}]
        lines.append(_line("position", include, None, held))
    colors = list(COLORS)
    for a, b in _cycle(rng, pairs, n["color_attr"]):
        ca, cb = (colors[i] for i in rng.choice(len(colors), size=2, replace=False))
        include = [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}]
        lines.append(_line("color_attr", include, None, held))
    return lines


def write_prompts(path: str | os.PathLike, prompts: list[dict]) -> Path:
    """Write prompt lines as JSONL (atomically)."""
    return atomic_write_text(path, "".join(json.dumps(p) + "\n" for p in prompts))


def load_prompts(path: str | os.PathLike) -> list[dict]:
    """Read a GenEval-schema JSONL and check every line; returns the lines as written.

    Errors name the file, the line and the field, with the allowed values, e.g.
    `prompts.jsonl:3: include[0].color: unknown color 'teal'; allowed: red, ...`. A line
    without `prompt` gets GenEval's canonical phrasing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    prompts = []
    for lineno, line in iter_jsonl(path):
        try:
            if "tag" not in line:
                raise ValueError(f"tag: missing; allowed: {', '.join(TAGS)}")
            validate_metadata(line)
            if "prompt" not in line:
                line["prompt"] = canonical_prompt(line)
            elif not isinstance(line["prompt"], str):
                raise ValueError(f"prompt: must be a string, got {line['prompt']!r}")
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: {err}") from None
        prompts.append(line)
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def render_suite(
    prompts: list[dict],
    out_dir: str | os.PathLike,
    resolution: int = 256,
    images_per_prompt: int = 4,
    seed: int = 0,
    config: ShapesConfig = ShapesConfig(),
    overwrite: bool = False,
) -> dict:
    """Ground-truth renders of `prompts` in GenEval's folder layout; returns a summary.

    Image k of prompt i comes from its own seed (seed, i, k), so renders do not depend on
    how many prompts or images are asked for. The folder is built under a temporary name and
    renamed when complete; a non-empty `out_dir` is refused unless `overwrite`.
    """
    if not isinstance(images_per_prompt, int) or images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be a positive integer, got {images_per_prompt!r}")
    if not isinstance(resolution, int) or resolution < 16:
        raise ValueError(f"resolution must be an integer >= 16, got {resolution!r}")
    for i, line in enumerate(prompts):
        try:
            validate_metadata(line)
        except ValueError as err:
            raise ValueError(f"prompt {i}: {err}") from None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} is not empty; choose a new folder or pass overwrite (--overwrite)")
    with atomic_dir(out) as tmp:
        for i, line in enumerate(prompts):
            folder = tmp / f"{i:05d}"
            (folder / "samples").mkdir(parents=True)
            (folder / "metadata.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
            for k in range(images_per_prompt):
                rng = np.random.default_rng([int(seed), i, k])
                image = render_scene(scene_from_metadata(line, rng, config), resolution)
                buf = io.BytesIO()
                image.save(buf, format="PNG", compress_level=1)
                (folder / "samples" / f"{k:04d}.png").write_bytes(buf.getvalue())
    return {"out": str(out), "prompts": len(prompts), "images": len(prompts) * images_per_prompt}


__all__ = ["GENEVAL_TAG_COUNTS", "load_prompts", "make_suite", "render_suite", "write_prompts"]
