"""Milliseconds per image of the FSQ tokenizer's CPU `encode` / `decode` of one 256-image batch
for several piece sizes (`CPU_PIECE_PIXELS`, in 128-px images' worth of pixels), two rounds each.

    python scripts/bench_tokenizer_pieces.py runs/recipe7/tokenizer
"""

from __future__ import annotations

import argparse
import time

import torch

import simplear.visual_tokenizers.autoencoder as autoencoder
from simplear.visual_tokenizers import load_visual_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokenizer")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--pieces", default="8,16,32,256", help="piece sizes in 128-px images")
    args = ap.parse_args()
    tok = load_visual_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    for size in (128, 64):
        images = torch.rand(args.images, 3, size, size) * 2 - 1
        codes = torch.randint(0, tok.codebook_size, (args.images, size // tok.downsample, size // tok.downsample))
        tok.decode(codes[:8]), tok.encode(images[:8])  # warm-up
        for round_ in range(2):
            for piece in (int(p) for p in args.pieces.split(",")):
                autoencoder.CPU_PIECE_PIXELS = piece * 128 * 128
                row = {"size": size, "round": round_, "piece_128px_images": piece}
                for name, fn, x in (("encode", tok.encode, images), ("decode", tok.decode, codes)):
                    started = time.perf_counter()
                    fn(x)
                    row[f"{name}_ms_per_image"] = round((time.perf_counter() - started) * 1000 / args.images, 2)
                print(row, flush=True)


if __name__ == "__main__":
    main()
