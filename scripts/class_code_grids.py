"""Do a tokenizer's codes tell the six ShapesWorld classes apart at a resolution?

For N random placements (centre, size within the training range, one of four colours) one object
of each class is drawn at the same place, size and colour on a flat grey background, and the six
images are encoded; prints, per pair of classes, how often the two code grids were identical.

    python scripts/class_code_grids.py simplear/assets/default/visual_tokenizer --resolution 64 --placements 60
"""

from __future__ import annotations

import argparse
import itertools
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokenizer")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--placements", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import numpy as np
    import torch

    from simplear.data.shapes import Background, Scene, SceneObject, ShapesConfig, render_scene
    from simplear.visual_tokenizers import load_visual_tokenizer
    from simplear.visual_tokenizers.images import pil_to_tensor

    tokenizer = load_visual_tokenizer(args.tokenizer)
    flat = Background((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), texture_amp=0.0, grain=0.0)
    classes = ("star", "circle", "heart", "triangle", "cross", "square")
    sizes = ShapesConfig()
    rng = np.random.default_rng(args.seed)
    identical = {f"{a}/{b}": 0 for a, b in itertools.combinations(classes, 2)}
    with torch.inference_mode():
        for t in range(args.placements):
            cx, cy = rng.uniform(0.2, 0.8, 2)
            size = rng.uniform(sizes.min_size, sizes.max_size)
            color = ("red", "blue", "green", "yellow")[t % 4]
            images = [render_scene(Scene((SceneObject(c, color, cx, cy, size),), flat), args.resolution) for c in classes]
            codes = tokenizer.encode(pil_to_tensor(images))
            for (i, a), (j, b) in itertools.combinations(enumerate(classes), 2):
                identical[f"{a}/{b}"] += bool(torch.equal(codes[i], codes[j]))
    print(json.dumps({"tokenizer": args.tokenizer, "resolution": args.resolution, "placements": args.placements,
                      "identical_code_grids": identical}))


if __name__ == "__main__":
    main()
