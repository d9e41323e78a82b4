"""The judge's calibration experiment: is it right on images whose truth we know?

Three measurements on the ShapesWorld suite (`make_suite`), each at several resolutions:

1. Ground truth: renders of each prompt's own scene must be judged correct (target >= 0.98,
   GenEval's overall = mean over tags).
2. Corruptions: a prompt's spec is changed in one way (another colour, another count, another
   class, the relation flipped, the colours of two objects swapped), that spec is rendered, and
   the render is judged against the *original* prompt. Each such image is wrong by construction,
   so the fraction judged correct is the judge's false-positive rate (target <= 2%).
3. Degradations: ground-truth renders with mild Gaussian blur, Gaussian noise or JPEG
   compression; the drop in overall score is the cost (target <= 0.03).

Images are rendered in memory (no files), from seeds (seed, prompt index, image index) so the
figures are reproducible. `calibrate` returns plain data; `format_report` prints it.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from simplear.data.shapes import CLASSES, COLORS, render_scene, scene_from_metadata
from simplear.eval.judge import TAGS, JudgeConfig, judge

CORRUPTIONS = ("color", "count", "class", "relation", "swap")
DEGRADATIONS = ("blur", "noise", "jpeg")
_FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@dataclass(frozen=True)
class CalibrationConfig:
    resolutions: tuple[int, ...] = (64, 128, 256)
    seed: int = 0
    images_per_prompt: int = 1
    per_tag: int | None = None  # use only the first N prompts of each tag (None: the whole suite)
    # "Mild" = what leaves a 10-pixel shape recognisable at 64 px: sub-pixel blur, light noise,
    # JPEG at quality 90 without chroma subsampling (4:2:0 halves the resolution of the colour
    # that carries an orange shape on a grey of equal luminance). Harsher settings are measured
    # too, in docs/benchmarks.md.
    blur_radius: float = 0.5  # Gaussian blur radius (sigma) in pixels
    noise_std: float = 6.0  # Gaussian noise, in 0..255 units
    jpeg_quality: int = 90
    jpeg_subsampling: int = 0  # PIL's code: 0 = 4:4:4, 2 = 4:2:0 (PIL's default)
    judge: JudgeConfig = JudgeConfig()


def corrupt(line: dict, kind: str, rng: np.random.Generator) -> dict | None:
    """A spec that differs from `line` in one way `kind`, or None where `kind` does not apply.

    Only the include list is kept: the scene built from it has exactly those objects.
    """
    include = [dict(c) for c in line["include"]]
    named = {c["class"] for c in include}
    if kind == "color":
        coloured = [i for i, c in enumerate(include) if "color" in c]
        if not coloured:
            return None
        i = coloured[int(rng.integers(len(coloured)))]
        used = {c.get("color") for c in include}
        include[i]["color"] = str(rng.choice([c for c in COLORS if c not in used]))
    elif kind == "count":
        if line.get("tag") == "counting":
            n = include[0]["count"]
            include[0]["count"] = n - 1 if (n == 4 or (n > 1 and rng.random() < 0.5)) else n + 1
        elif len(include) >= 2:  # a missing object (GenEval ignores extra ones outside counting)
            del include[int(rng.integers(len(include)))]
            for c in include:
                c.pop("position", None)
        else:
            return None
    elif kind == "class":
        i = int(rng.integers(len(include)))
        include[i]["class"] = str(rng.choice([c for c in CLASSES if c not in named]))
    elif kind == "relation":
        placed = [i for i, c in enumerate(include) if "position" in c]
        if not placed:
            return None
        rel, ref = include[placed[0]]["position"]
        include[placed[0]]["position"] = [_FLIP[rel], ref]
    elif kind == "swap":
        coloured = [i for i, c in enumerate(include) if "color" in c]
        if len(coloured) < 2 or include[coloured[0]]["color"] == include[coloured[1]]["color"]:
            return None
        a, b = coloured[:2]
        include[a]["color"], include[b]["color"] = include[b]["color"], include[a]["color"]
    else:
        raise ValueError(f"unknown corruption {kind!r}; allowed: {', '.join(CORRUPTIONS)}")
    return {"tag": line.get("tag"), "include": include}


def degrade(image: Image.Image, kind: str, config: CalibrationConfig, rng: np.random.Generator) -> Image.Image:
    """`image` with one mild degradation applied."""
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(config.blur_radius))
    if kind == "noise":
        arr = np.asarray(image, dtype=np.float32) + rng.normal(0.0, config.noise_std, size=(*image.size[::-1], 3))
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    if kind == "jpeg":
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=config.jpeg_quality, subsampling=config.jpeg_subsampling)
        buf.seek(0)
        return Image.open(buf).convert("RGB")
    raise ValueError(f"unknown degradation {kind!r}; allowed: {', '.join(DEGRADATIONS)}")


def select_prompts(suite: list[dict], per_tag: int | None) -> list[tuple[int, dict]]:
    """(suite index, line) pairs: all of them, or the first `per_tag` lines of every tag."""
    if per_tag is None:
        return list(enumerate(suite))
    seen: dict[str, int] = defaultdict(int)
    out = []
    for i, line in enumerate(suite):
        if seen[line["tag"]] < per_tag:
            seen[line["tag"]] += 1
            out.append((i, line))
    return out


def _overall(correct_by_tag: dict[str, list[bool]]) -> float:
    accs = [sum(v) / len(v) for v in correct_by_tag.values() if v]
    return sum(accs) / len(accs) if accs else 0.0


def calibrate_resolution(resolution: int, prompts: list[tuple[int, dict]], config: CalibrationConfig) -> dict:
    """All three measurements at one resolution."""
    gt: dict[str, list[bool]] = defaultdict(list)
    degraded: dict[str, dict[str, list[bool]]] = {k: defaultdict(list) for k in DEGRADATIONS}
    fooled: dict[str, list[bool]] = {k: [] for k in CORRUPTIONS}
    failures: list[dict[str, Any]] = []
    for i, line in prompts:
        for k in range(config.images_per_prompt):
            rng = np.random.default_rng([config.seed, i, k])
            image = render_scene(scene_from_metadata(line, rng), resolution)
            verdict = judge(image, line, config.judge)
            gt[line["tag"]].append(verdict.correct)
            if not verdict.correct:
                failures.append({"kind": "ground truth", "prompt": line["prompt"], "reason": verdict.reason})
            for kind in DEGRADATIONS:
                degraded[kind][line["tag"]].append(judge(degrade(image, kind, config, rng), line, config.judge).correct)
            for kind in CORRUPTIONS:
                spec = corrupt(line, kind, rng)
                if spec is None:
                    continue
                wrong = render_scene(scene_from_metadata(spec, rng), resolution)
                ok = judge(wrong, line, config.judge).correct
                fooled[kind].append(ok)
                if ok:
                    failures.append({"kind": f"corrupt:{kind}", "prompt": line["prompt"], "spec": spec})
    gt_overall = _overall(gt)
    all_fooled = [v for vs in fooled.values() for v in vs]
    return {
        "resolution": resolution,
        "images": sum(len(v) for v in gt.values()),
        "ground_truth": {"overall": gt_overall, "tags": {t: sum(v) / len(v) for t, v in gt.items()}},
        "corrupted": {
            "rate": sum(all_fooled) / len(all_fooled) if all_fooled else 0.0,
            "images": len(all_fooled),
            "kinds": {k: {"rate": sum(v) / len(v) if v else 0.0, "images": len(v)} for k, v in fooled.items()},
        },
        "degraded": {k: {"overall": _overall(v), "cost": gt_overall - _overall(v)} for k, v in degraded.items()},
        "failures": failures[:20],
    }


def calibrate(config: CalibrationConfig | None = None, suite: list[dict] | None = None) -> dict:
    """Run the calibration experiment at every resolution of `config`."""
    config = config or CalibrationConfig()
    if not config.resolutions or any((not isinstance(r, int)) or r < 16 for r in config.resolutions):
        raise ValueError(f"resolutions must be integers >= 16, got {config.resolutions!r}")
    if config.images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {config.images_per_prompt}")
    if suite is None:
        from simplear.eval.suite import make_suite

        suite = make_suite(config.seed)
    prompts = select_prompts(suite, config.per_tag)
    return {
        "config": {
            "resolutions": list(config.resolutions),
            "seed": config.seed,
            "prompts": len(prompts),
            "images_per_prompt": config.images_per_prompt,
            "blur_radius": config.blur_radius,
            "noise_std": config.noise_std,
            "jpeg_quality": config.jpeg_quality,
            "jpeg_subsampling": config.jpeg_subsampling,
        },
        "results": [calibrate_resolution(r, prompts, config) for r in config.resolutions],
    }


def format_report(report: dict) -> str:
    """Markdown tables: ground truth per tag, corruption false-positive rates, degradation costs."""
    results = report["results"]
    head = "| | " + " | ".join(f"{r['resolution']} px" for r in results) + " |"
    rule = "|---" * (len(results) + 1) + "|"
    lines = ["Ground-truth renders (GenEval overall = mean over tags; target >= 0.98)", "", head, rule]
    tags = [t for t in TAGS if any(t in r["ground_truth"]["tags"] for r in results)]
    for tag in tags:
        lines.append(f"| {tag} | " + " | ".join(f"{r['ground_truth']['tags'].get(tag, float('nan')):.4f}" for r in results) + " |")
    lines.append("| **overall** | " + " | ".join(f"{r['ground_truth']['overall']:.4f}" for r in results) + " |")
    lines += ["", "Corrupted specs judged correct (false positives; target <= 0.02)", "", head, rule]
    for kind in CORRUPTIONS:
        cells = [f"{r['corrupted']['kinds'][kind]['rate']:.4f} (n={r['corrupted']['kinds'][kind]['images']})" for r in results]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"{r['corrupted']['rate']:.4f} (n={r['corrupted']['images']})" for r in results) + " |")
    lines += ["", "Degradation cost (overall drop; target <= 0.03)", "", head, rule]
    for kind in DEGRADATIONS:
        lines.append(f"| {kind} | " + " | ".join(f"{r['degraded'][kind]['cost']:+.4f}" for r in results) + " |")
    return "\n".join(lines)


__all__ = [
    "CORRUPTIONS",
    "DEGRADATIONS",
    "CalibrationConfig",
    "calibrate",
    "calibrate_resolution",
    "corrupt",
    "degrade",
    "format_report",
    "select_prompts",
]
