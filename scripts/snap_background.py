"""Would the AR model's targets be easier with one code for the plain background? A measurement.

    python scripts/snap_background.py runs/recipe15/tokenizer runs/recipe19/tokenizer

The recipe's training scenes sit on a flat mid-grey background, yet the FSQ encoder, whose
receptive field reaches past its 8 x 8 patch, gives flat background patches many codes. For each
tokenizer this renders the 553 suite prompts (image 0 each) on the training scenes' plain
background at 128 px, encodes them, and replaces the code of every flat background patch whose
(2r+1) x (2r+1) neighbourhood is all flat background by the code a wholly grey image encodes to
(r = 0, 1, 2), as `simplear data tokenize --snap-color 128,128,128 --snap-radius r` does in
token shards. It prints, for the plain codes and each r, the judge's accuracy on the decoded
round trips and the entropy (bits) and number of distinct codes over the suite; and, for the
plain codes, how many distinct codes the flat background patches get (all images, and the median
per image) and the share of them holding the most common one.
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from simplear.data.shapes import ShapesConfig, render_scene, scene_from_metadata
from simplear.data.shards import flat_patches, snap_flat, uniform_code
from simplear.eval.judge import judge
from simplear.train.tokenizer_eval import _metadata_line, suite_metadata
from simplear.visual_tokenizers import load_visual_tokenizer
from simplear.visual_tokenizers.images import pil_to_tensor, tensor_to_pil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from code_stats import entropy_bits  # noqa: E402  (a sibling script)

GREY = (128, 128, 128)  # the plain background


def measure(path: str, radii: list[int], resolution: int = 128, batch: int = 64) -> None:
    tokenizer = load_visual_tokenizer(path)
    metadatas = [_metadata_line(m) for m in suite_metadata(0, 553)]
    plain = ShapesConfig(background="plain", grid=16)
    images = [render_scene(scene_from_metadata(m, np.random.default_rng([0, i, 0]), plain), resolution)
              for i, m in enumerate(metadatas)]
    with torch.inference_mode():
        code = uniform_code(tokenizer, GREY, resolution)
        variants = ["plain"] + [f"r{r}" for r in radii]
        decoded = {v: [] for v in variants}
        counts = {v: Counter() for v in variants}
        background, per_image = Counter(), []
        for i in range(0, len(images), batch):
            x = pil_to_tensor(images[i : i + batch])
            codes = tokenizer.encode(x)
            flat = flat_patches(x, GREY, tokenizer.downsample)
            background.update(codes[flat].tolist())
            per_image += [len(codes[b][flat[b]].unique()) for b in range(len(codes)) if flat[b].any()]
            for v in variants:
                c = codes if v == "plain" else snap_flat(codes, x, GREY, int(v[1:]), code)[0]
                counts[v].update(c.flatten().tolist())
                decoded[v] += tensor_to_pil(tokenizer.decode(c).cpu())
    print(f"{path}: a grey image encodes to code {code}; flat background patches: "
          f"{sum(background.values())}, {len(background)} distinct codes (median {np.median(per_image):g} per image), "
          f"the most common {background.most_common(1)[0][1] / sum(background.values()):.4f} of them")
    for v in variants:
        accuracy = np.mean([judge(im, m).correct for im, m in zip(decoded[v], metadatas)])
        entropy = entropy_bits(np.array(list(counts[v].values())))
        print(f"  {v:>5}: round-trip accuracy {accuracy:.4f}, entropy {entropy:.4f} bits, "
              f"{len(counts[v])} distinct codes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizers", nargs="+", help="visual tokenizer folders")
    parser.add_argument("--radius", type=int, action="append", help="neighbourhood radius (repeatable; default 0 1 2)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for path in args.tokenizers:
        measure(path, args.radius or [0, 1, 2])
