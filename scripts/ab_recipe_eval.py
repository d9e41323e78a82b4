"""A/B of the recipe's evaluation settings on one bundle, in one process: the stage evaluation
(553 prompts x 4 images) and the post-SFT sampling sweep, with the settings before 2026-11-23
(generation and decoding in batches of 32; eight sweep candidates) and after (generation in
batches of 128, decoding in 16s; the four temperature-0.7 candidates).

    python scripts/ab_recipe_eval.py runs/recipe6/sft/bundle
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import simplear.train.suite_eval as suite_eval
import simplear.visual_tokenizers.autoencoder as autoencoder
from simplear.train.recipe import RecipeConfig, tune_sampling

OLD_SWEEP = ((2.0, 1.0), (3.0, 1.0), (5.0, 1.0), (8.0, 1.0), (2.0, 0.7), (3.0, 0.7), (5.0, 0.7), (8.0, 0.7))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--prompts", type=int, default=0, help="suite prompts (default all 553)")
    args = ap.parse_args()
    from simplear.bundle import load_bundle
    from simplear.eval.suite import make_suite

    new = RecipeConfig(out="unused")
    old = dataclasses.replace(new, eval_batch_size=32, tune_sampling=OLD_SWEEP)
    bundle = load_bundle(args.bundle)
    bundle.model.eval()
    suite = suite_eval.spread(make_suite(seed=0), args.prompts)
    sampling = json.loads(json.dumps(bundle.config.sampling.to_dict()))
    print(f"bundle {args.bundle}: {len(suite)} prompts x 4 images, sampling {sampling}", flush=True)
    for name, cfg, decode in (("old", old, 32), ("new", new, 16)):
        autoencoder.CPU_PIECE_PIXELS = decode * 128 * 128  # images per decode call at 128 px
        started = time.perf_counter()
        result = suite_eval.evaluate_bundle(bundle, suite, images_per_prompt=4, seed=0, batch_size=cfg.eval_batch_size)
        evaluation = time.perf_counter() - started
        started = time.perf_counter()
        sweep = _sweep(cfg, args.bundle)
        swept = time.perf_counter() - started
        print(json.dumps({"settings": name, "eval_batch_size": cfg.eval_batch_size, "decode_batch": decode,
                          "eval_s": round(evaluation, 1), "overall": result["overall"],
                          "sweep_candidates": len(cfg.tune_sampling), "sweep_s": round(swept, 1),
                          "sweep": [(c["cfg_scale"], c["temperature"], c["overall"]) for c in sweep["candidates"]],
                          "chosen": sweep["chosen"]}), flush=True)


def _sweep(cfg: RecipeConfig, bundle_path: str) -> dict:
    """tune_sampling on a copy of the bundle folder (it rewrites the bundle's simplear.json)."""
    import shutil
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(bundle_path, copy)
        return tune_sampling(cfg, str(copy))


if __name__ == "__main__":
    main()
