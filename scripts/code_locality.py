"""Does a tokenizer's code depend on pixels far away? Put one ShapesWorld image on a larger
plain canvas, encode it with and without a second image in the opposite corner, and count the
codes of the first image's far side that change.

    python scripts/code_locality.py runs/recipe21/tokenizer runs/recipe21/data/high --pairs 100

Each canvas is twice the images' side: image k at the top left, image k + offset at the bottom
right of the second canvas only. The positions compared are the first image's patches at least
6 patches (48 px at 8x) from the second image, so no convolution of a small encoder reaches
across. With GroupNorm (statistics over the whole canvas) codes there still change; with
`norm="pixel"` none may.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simplear.data.shapes import PLAIN_BACKGROUND
from simplear.visual_tokenizers import load_visual_tokenizer


def load(data: Path, line: str) -> torch.Tensor:
    pixels = np.asarray(Image.open(data / json.loads(line)["image"]).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1) / 127.5 - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizer", help="a visual tokenizer folder")
    parser.add_argument("data", type=Path, help="a ShapesWorld folder (captions.jsonl + images/), plain background")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--offset", type=int, default=5000, help="the second image of pair k is image k + offset")
    args = parser.parse_args()
    tok = load_visual_tokenizer(args.tokenizer)
    lines = (args.data / "captions.jsonl").read_text().splitlines()
    if len(lines) < args.pairs + args.offset:
        parser.error(f"{args.data} has {len(lines)} images; --pairs + --offset needs {args.pairs + args.offset}")
    size = load(args.data, lines[0]).shape[-1]
    d, gap = tok.downsample, 6
    n, half = 2 * size // tok.downsample, size // tok.downsample
    far = torch.zeros(n, n, dtype=torch.bool)  # the first image's patches >= gap patches from the second
    far[: half - gap, :half] = True
    far[:half, : half - gap] = True
    background = torch.tensor(PLAIN_BACKGROUND, dtype=torch.float32).view(3, 1, 1) / 127.5 - 1
    changed = compared = 0
    with torch.inference_mode():
        for k in range(args.pairs):
            alone = background.expand(3, 2 * size, 2 * size).clone()
            alone[:, :size, :size] = load(args.data, lines[k])
            paired = alone.clone()
            paired[:, size:, size:] = load(args.data, lines[k + args.offset])
            a, b = tok.encode(torch.stack([alone, paired]))
            changed += int(((a != b) & far).sum())
            compared += int(far.sum())
    print(json.dumps({"tokenizer": args.tokenizer, "norm": getattr(getattr(tok, "config", None), "norm", None),
                      "pairs": args.pairs, "canvas": 2 * size, "min_distance_px": gap * d,
                      "far_positions": compared, "changed": changed, "changed_share": round(changed / compared, 4)}))


if __name__ == "__main__":
    main()
