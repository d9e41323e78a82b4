"""The recipe's post-SFT sampling sweep on any bundle, with the (CFG scale, temperature) pairs you
name, without touching the bundle: 384 prompts of `make_suite(seed=1)` spread over the tags, 1 image
each, seed 101, sampler batch 128 (`RecipeConfig`'s defaults), judged. Prints one JSON line per pair
and the pair the recipe would choose.

    python scripts/sampling_sweep.py runs/recipe22/sft/bundle --pairs 1.0:0.7 1.5:0.7 2.0:0.7
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile


def pair(text: str) -> tuple[float, float]:
    try:
        scale, temperature = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CFG:TEMPERATURE such as 2.0:0.7, got {text!r}") from None
    return scale, temperature


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--pairs", type=pair, nargs="+", required=True, help="CFG:TEMPERATURE pairs")
    args = ap.parse_args()
    from simplear.train.recipe import RecipeConfig, tune_sampling

    cfg = RecipeConfig(out=args.bundle, tune_sampling=tuple(args.pairs))  # `out` is unused here
    with tempfile.TemporaryDirectory() as tmp:
        copy = shutil.copytree(args.bundle, f"{tmp}/bundle")  # tune_sampling writes its choice in
        sweep = tune_sampling(cfg, copy)
    for row in sweep["candidates"]:
        print(json.dumps(row))
    print(json.dumps({"prompts": sweep["prompts"], "chosen": sweep["chosen"]}))


if __name__ == "__main__":
    main()
