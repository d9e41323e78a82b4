"""How good is a visual tokenizer for ShapesWorld? (`simplear eval tokenizer`)

A tokenizer that loses counts, colours or shapes makes every later stage fail, so besides PSNR and
codebook usage we measure what matters downstream: render the GenEval-style suite's ground-truth
scenes, round-trip them (encode -> decode) and score both the originals and the round-trips with
the judge. The round-trip score is the ceiling of any AR model trained on this tokenizer.

Prompts come from `simplear.eval.suite.make_suite(seed)` when that module exists, otherwise from
ShapesWorld's metadata sampler (GenEval's tag proportions); either way one scene per prompt is
built with `scene_from_metadata` (the suite's own ground-truth render, image 0) and rendered at
each resolution asked for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simplear.utils import atomic_write_json
from simplear.visual_tokenizers import load_visual_tokenizer
from simplear.visual_tokenizers.images import pil_to_tensor, tensor_to_pil


@dataclass(frozen=True)
class TokenizerEvalConfig:
    tokenizer: str
    resolutions: tuple[int, ...] = (64, 128)
    num_images: int = 553  # prompts taken from the suite (553 = all of GenEval-sized suite)
    suite_seed: int = 0
    batch_size: int = 32
    device: str | None = None
    out: str | None = None  # optional JSON report path


def suite_metadata(seed: int, limit: int) -> list[dict]:
    """GenEval-style metadata lines: the evaluation suite when present, else sampled ones."""
    try:
        from simplear.eval.suite import make_suite
    except ImportError:
        make_suite = None
    if make_suite is not None:
        return list(make_suite(seed))[:limit]
    from simplear.data.shapes import ShapesConfig, sample_metadata

    rng = np.random.default_rng(seed)
    config = ShapesConfig(heldout=())
    return [sample_metadata(rng, config) for _ in range(limit)]


def _metadata_line(item: dict) -> dict:
    # Suites may wrap the GenEval line ({"metadata": {...}}) or be the line itself.
    return item["metadata"] if "metadata" in item and isinstance(item["metadata"], dict) else item


def suite_lines(seed: int, limit: int) -> list[dict]:
    """The first `limit` GenEval metadata lines of the suite (or sampled ones), unwrapped."""
    return [_metadata_line(m) for m in suite_metadata(seed, limit)]


def suite_renders(metadatas: list[dict], seed: int, resolution: int) -> list:
    """Ground-truth renders of `metadatas` at `resolution`: image 0 of prompt i exactly as
    `render_suite(..., seed=seed)` draws it."""
    from simplear.data.shapes import render_scene, scene_from_metadata

    return [render_scene(scene_from_metadata(m, np.random.default_rng([seed, i, 0])), resolution)
            for i, m in enumerate(metadatas)]


def evaluate_tokenizer(cfg: TokenizerEvalConfig) -> dict:
    """PSNR, codebook usage and judge scores (originals vs round-trips) at each resolution."""
    from simplear.eval.judge import judge

    tokenizer = load_visual_tokenizer(cfg.tokenizer, device=cfg.device or ("cuda" if torch.cuda.is_available() else None))
    metadatas = suite_lines(cfg.suite_seed, cfg.num_images)
    report: dict = {"tokenizer": str(Path(cfg.tokenizer)), "codebook_size": tokenizer.codebook_size,
                    "downsample": tokenizer.downsample, "prompts": len(metadatas), "resolutions": {}}
    for resolution in cfg.resolutions:
        originals = suite_renders(metadatas, cfg.suite_seed, resolution)
        t0 = time.time()
        round_trips, se, count, used = [], 0.0, 0, set()
        for i in range(0, len(originals), cfg.batch_size):
            x = pil_to_tensor(originals[i : i + cfg.batch_size])
            codes = tokenizer.encode(x)
            y = tokenizer.decode(codes).cpu()
            se += torch.nn.functional.mse_loss(y, x, reduction="sum").item()
            count += x.numel()
            used.update(codes.unique().tolist())
            round_trips += tensor_to_pil(y)
        seconds = time.time() - t0
        orig = [judge(im, m) for im, m in zip(originals, metadatas)]
        rt = [judge(im, m) for im, m in zip(round_trips, metadatas)]
        report["resolutions"][str(resolution)] = {
            "tokens": int((resolution // tokenizer.downsample) ** 2),
            "psnr": 10.0 * float(np.log10(4.0 / max(se / count, 1e-12))),
            "codebook_usage": len(used) / tokenizer.codebook_size,
            "judge_accuracy_original": float(np.mean([j.correct for j in orig])),
            "judge_accuracy_roundtrip": float(np.mean([j.correct for j in rt])),
            "judge_score_original": float(np.mean([j.score for j in orig])),
            "judge_score_roundtrip": float(np.mean([j.score for j in rt])),
            "roundtrip_seconds": round(seconds, 2),
        }
    if cfg.out:
        atomic_write_json(cfg.out, report)
    return report
