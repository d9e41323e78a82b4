"""How much of a token shard's entropy is context noise: the codes given the pixels around them.

    python scripts/context_entropy.py runs/recipe21/data/high runs/recipe21/tokens/high --radius 1

For every code position of the first `--images` images, the key is the exact pixels of the
(2r+1) x (2r+1) patches centred on it (outside the image counts as a value no pixel has). Prints
H(code), H(code | key) in bits per position, and how many positions outside the snapped
background hold a code other than the one their key gets most often. On ShapesWorld's plain grid
scenes the same few thousand keys recur, so H(code | key) is the part of the entropy that no
content of the neighbourhood explains: codes the encoder picks from what lies further away. A
tokenizer whose codes were a function of the neighbourhood would take exactly that off every
position.
"""

import argparse
import hashlib
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from code_stats import entropy_bits  # noqa: E402  (a sibling script)


def counts_entropy(counts) -> float:
    return entropy_bits(np.fromiter(counts, dtype=np.int64))


def context_entropy(data: Path, tokens: Path, images: int, radius: int) -> dict:
    manifest = json.loads((tokens / "manifest.json").read_text())
    if manifest.get("num_skipped"):
        raise SystemExit(f"{tokens} skipped images, so its rows no longer line up with {data}/captions.jsonl")
    codes = np.concatenate([np.load(tokens / f"{s['name']}.npy") for s in manifest["shards"]])[:images]
    down = manifest["visual_tokenizer"]["downsample"]
    res = manifest["resolution"]
    lines = (data / "captions.jsonl").read_text().splitlines()[: len(codes)]
    snap = manifest.get("snap", {}).get("code")
    by_key: dict[bytes, Counter] = defaultdict(Counter)
    seen = []  # (key, code) of every position, in order
    p = down * radius
    side = down * (2 * radius + 1)
    for row, line in zip(codes, lines):
        image = Image.open(data / json.loads(line)["image"]).convert("RGB")
        if image.size != (res, res):
            raise SystemExit(f"{data} holds {image.size} images; this script needs them at the shards' {res} px")
        pixels = np.pad(np.asarray(image, dtype=np.int16), ((p, p), (p, p), (0, 0)), constant_values=-1)
        for (i, j), code in np.ndenumerate(row):
            window = pixels[down * i: down * i + side, down * j: down * j + side]
            key = hashlib.blake2b(window.tobytes(), digest_size=12).digest()
            by_key[key][int(code)] += 1
            seen.append((key, int(code)))
    total = len(seen)
    conditional = sum(counts_entropy(c.values()) * sum(c.values()) for c in by_key.values()) / total
    mode = {key: c.most_common(1)[0][0] for key, c in by_key.items()}
    outside = [(key, code) for key, code in seen if code != snap]
    return {"images": int(len(codes)), "radius": radius, "positions": total, "distinct_keys": len(by_key),
            "positions_with_a_key_seen_once": sum(1 for c in by_key.values() if sum(c.values()) == 1),
            "entropy_bits": round(counts_entropy(Counter(code for _, code in seen).values()), 4),
            "entropy_given_key_bits": round(conditional, 4),
            "unsnapped_positions": len(outside),
            "unsnapped_not_the_key_mode": sum(1 for key, code in outside if mode[key] != code)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a ShapesWorld folder (captions.jsonl + images/)")
    parser.add_argument("tokens", type=Path, help="its token shards (simplear data tokenize --out)")
    parser.add_argument("--images", type=int, default=2000, help="how many of the first images to read")
    parser.add_argument("--radius", type=int, default=1, help="patches on each side that make the key")
    args = parser.parse_args()
    if not (args.tokens / "manifest.json").is_file():
        parser.error(f"{args.tokens} has no manifest.json: give a token shard folder")
    if not (args.data / "captions.jsonl").is_file():
        parser.error(f"{args.data} has no captions.jsonl: give the data folder the shards were made from")
    if args.images < 1 or args.radius < 0:
        parser.error("--images must be >= 1 and --radius >= 0")
    print(json.dumps(context_entropy(args.data, args.tokens, args.images, args.radius)))
