"""A/B in one process: milliseconds per image of `decode` for several visual tokenizers on the same codes.

    python scripts/ab_decoder_speed.py TOKENIZER [TOKENIZER ...] [--threads 2] [--rounds 3] [--batch 64]

Renders the first `--batch` prompts of the evaluation suite at 64 and 128 px (their ground-truth
renders, as `simplear eval tokenizer` draws them), encodes them with the first tokenizer, and decodes those codes with every tokenizer in turn, `--rounds` rounds after one
warm-up (the tokenizers must share a codebook; with one encoder, as after `--freeze-encoder`, only
the decoders differ). Prints every round and the fastest of each, as ratios to the first.
"""

import argparse
import time

import torch

from simplear.train.tokenizer_eval import suite_lines, suite_renders
from simplear.visual_tokenizers import load_visual_tokenizer, pil_to_tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizers", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    toks = [load_visual_tokenizer(path, device="cpu") for path in args.tokenizers]
    if len({t.codebook_size for t in toks}) != 1:
        raise SystemExit("the tokenizers have different codebooks: they cannot decode the same codes")
    metadatas = suite_lines(0, args.batch)
    print(f"{args.threads} threads, batch {args.batch}, decode ms per image")
    for resolution in (64, 128):
        images = pil_to_tensor(suite_renders(metadatas, 0, resolution))
        with torch.inference_mode():
            codes = toks[0].encode(images)
            best = [float("inf")] * len(toks)
            for rnd in range(args.rounds + 1):  # round 0 warms every decoder up and is not counted
                for i, tok in enumerate(toks):
                    started = time.perf_counter()
                    tok.decode(codes)
                    ms = (time.perf_counter() - started) / len(codes) * 1000
                    if rnd:
                        best[i] = min(best[i], ms)
                        print(f"{resolution} px round {rnd} {args.tokenizers[i]} {ms:.2f}")
        for path, ms in zip(args.tokenizers, best):
            print(f"{resolution} px fastest {path}: {ms:.2f} ms ({ms / best[0]:.2f}x the first)")


if __name__ == "__main__":
    main()
