"""How hard a tokenizer's codes are to model: statistics of the token shards a recipe trains on.

    python scripts/code_stats.py runs/recipe15/tokens/high runs/recipe19/tokens/high

For each shard folder: images, distinct codes, the unigram entropy of the codes and the entropy
of a code given the code to its left (raster order, first column excluded), in bits, and the share
of positions holding the most common code (on ShapesWorld's plain scenes: background). A
tokenizer whose codes carry more bits per position leaves the AR model more to predict.
"""

import argparse
import json
from pathlib import Path

import numpy as np


def entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def code_stats(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    codes = np.concatenate([np.load(folder / f"{s['name']}.npy") for s in manifest["shards"]]).astype(np.int64)
    size = int(codes.max()) + 1
    unigram = np.bincount(codes.ravel(), minlength=size)
    left, right = codes[:, :, :-1].ravel(), codes[:, :, 1:].ravel()
    pairs = np.bincount(left * size + right, minlength=size * size).reshape(size, size)
    conditional = entropy_bits(pairs.ravel()) - entropy_bits(pairs.sum(axis=1))  # H(right | left)
    return {"folder": str(folder), "images": int(codes.shape[0]), "grid": list(codes.shape[1:]),
            "distinct_codes": int((unigram > 0).sum()), "entropy_bits": round(entropy_bits(unigram), 4),
            "entropy_given_left_bits": round(conditional, 4),
            "most_common_share": round(float(unigram.max() / unigram.sum()), 4)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="token shard folders (with manifest.json)")
    folders = parser.parse_args().folders
    for folder in folders:
        if not (folder / "manifest.json").is_file():
            parser.error(f"{folder} has no manifest.json: give a token shard folder (simplear data tokenize --out)")
    for folder in folders:
        print(json.dumps(code_stats(folder)))
