"""Why a bundle fails the held-out colour-class pairs: missing codes, or composition?

Two measurements, for the suite's prompts that name a held-out (colour, class) pair against the rest:

1. Code coverage. Ground-truth renders of the suite (image 0 of each prompt, drawn with the
   training data's scene settings, read from DATA/config.json) are encoded with the bundle's visual
   tokenizer; for every non-background code we look up how often it occurs in the training token
   shards. If the held-out renders need codes the model never saw, it cannot draw them.
2. What the model draws. For the held-out `colors` prompts ("a photo of a blue star"), 4 images
   each (seed 0, the bundle's sampling settings, sampler batch 128 as in the recipe's evaluation),
   the detector's objects are tallied: the asked class in the asked colour, the asked colour on
   another class, the asked class in another colour, neither.

    python scripts/heldout_pairs.py simplear/assets/default --shards runs/recipe9/tokens/high \
        --data runs/recipe7/data/high
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--shards", required=True, help="the training token shards (a folder of shard-*.npy)")
    ap.add_argument("--data", required=True, help="the training images' folder (its config.json gives the scenes)")
    ap.add_argument("--images", type=int, default=4, help="images per held-out colors prompt")
    args = ap.parse_args()
    import numpy as np
    import torch

    from simplear.bundle import load_bundle
    from simplear.data.shapes import ShapesConfig, render_array, scene_from_metadata
    from simplear.eval.detector import detect
    from simplear.eval.suite import make_suite
    from simplear.train.suite_eval import generate_codes
    from simplear.visual_tokenizers.images import tensor_to_pil, uint8_to_float

    bundle = load_bundle(args.bundle)
    bundle.model.eval()
    tokenizer = bundle.visual_tokenizer
    resolution = bundle.config.image_size
    shapes = json.loads((Path(args.data) / "config.json").read_text())["shapes"]
    config = ShapesConfig(heldout=tuple(map(tuple, shapes["heldout"])), background=shapes["background"],
                          grid=shapes["grid"])
    heldout = set(config.heldout)

    counts = np.zeros(tokenizer.codebook_size, dtype=np.int64)
    shard_files = sorted(glob.glob(str(Path(args.shards) / "shard-*.npy")))
    if not shard_files:
        raise SystemExit(f"no shard-*.npy in {args.shards}")
    for f in shard_files:
        counts += np.bincount(np.load(f).reshape(-1).astype(np.int64), minlength=tokenizer.codebook_size)
    background = int(counts.argmax())

    suite = make_suite(seed=0)
    held = np.array([any((c.get("color"), c["class"]) in heldout for c in m["include"]) for m in suite])
    renders = [render_array(scene_from_metadata(m, np.random.default_rng([0, i, 0]), config), resolution)
               for i, m in enumerate(suite)]
    x = uint8_to_float(torch.from_numpy(np.stack(renders)).permute(0, 3, 1, 2))
    with torch.inference_mode():
        codes = torch.cat([tokenizer.encode(x[i : i + 64]) for i in range(0, len(x), 64)])
    codes = codes.reshape(len(suite), -1).numpy()
    print(f"training shards: {len(shard_files)} files, {int(counts.sum())} codes, "
          f"{int((counts > 0).sum())} of {tokenizer.codebook_size} codes occur")
    print("| prompts | renders | non-background codes | never in training | at most 5 times | median count |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, sel in (("held-out pairs", held), ("the rest", ~held)):
        fg = codes[sel][codes[sel] != background]
        print(f"| {name} | {int(sel.sum())} | {fg.size} | {(counts[fg] == 0).mean():.4f} | "
              f"{(counts[fg] <= 5).mean():.4f} | {int(np.median(counts[fg]))} |")

    colors = [m for m in suite if m["tag"] == "colors" and (m["include"][0]["color"], m["include"][0]["class"]) in heldout]
    metas = [m for m in colors for _ in range(args.images)]
    drawn = generate_codes(bundle, [m["prompt"] for m in metas], seed=0, batch_size=128)
    tally = collections.Counter()
    with torch.inference_mode():
        images = torch.cat([tokenizer.decode(drawn[i : i + 16]) for i in range(0, len(drawn), 16)])
    for image, meta in zip(tensor_to_pil(images), metas):
        want = meta["include"][0]
        found = [(d.color, d.cls) for d in detect(image)]
        if (want["color"], want["class"]) in found:
            tally["the asked class in the asked colour"] += 1
        elif any(c == want["color"] for c, _ in found):
            tally["the asked colour on another class"] += 1
        elif any(k == want["class"] for _, k in found):
            tally["the asked class in another colour"] += 1
        elif found:
            tally["neither"] += 1
        else:
            tally["no object"] += 1
    print(f"\nheld-out colors prompts: {len(colors)} x {args.images} images "
          f"({', '.join(m['prompt'] for m in colors)})")
    for reason, n in tally.most_common():
        print(f"{n:4d}  {reason}")


if __name__ == "__main__":
    main()
