"""The same generated codes decoded by several visual tokenizers, each judged: a decoder's own effect.

A decoder-only fine-tune (`simplear train tokenizer --freeze-encoder`) keeps every code, so a model
trained on the old tokenizer's shards can take the new decoder as it is. Whether it should is a
question of what the judge sees: this generates the suite's 553 prompts x 4 images once with
BUNDLE (seed 0, sampler batch 128, the bundle's sampling settings: the recipe's stage evaluation),
keeps the codes in CODES (reused when the file exists), then decodes them with each TOKENIZER and
prints GenEval's table, held-out and seen pairs apart. The comparison is paired: only the decoder differs.

    python scripts/decoder_ab.py simplear/assets/default /tmp/codes.pt \
        simplear/assets/default/visual_tokenizer runs/tok/dec64
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("codes", help="a .pt file: read when it exists, else written after generating")
    ap.add_argument("tokenizers", nargs="+", help="visual tokenizer folders with the bundle's codebook")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    import torch

    from simplear.bundle import load_bundle
    from simplear.eval.suite import make_suite
    from simplear.train.suite_eval import generate_codes, judge_codes, records_table
    from simplear.visual_tokenizers import load_visual_tokenizer

    items = [m for m in make_suite(seed=0) for _ in range(4)]
    bundle = load_bundle(args.bundle)
    if os.path.exists(args.codes):
        codes = torch.load(args.codes)
        if codes.shape[0] != len(items):
            raise SystemExit(f"{args.codes} holds {codes.shape[0]} images, the suite needs {len(items)}")
    else:
        bundle.model.eval()
        started = time.perf_counter()
        codes = generate_codes(bundle, [m["prompt"] for m in items], seed=0, batch_size=args.batch_size)
        torch.save(codes, args.codes)
        print(f"generated {len(items)} images' codes in {time.perf_counter() - started:.1f} s")
    for path in args.tokenizers:
        tokenizer = load_visual_tokenizer(path)
        if tokenizer.codebook_size != bundle.vocab.codebook_size:
            raise SystemExit(f"{path} has {tokenizer.codebook_size} codes, the bundle {bundle.vocab.codebook_size}")
        table = records_table(judge_codes(tokenizer, codes, items, batch_size=args.batch_size))
        print(json.dumps({"tokenizer": path, "overall": table["overall"], "partial": table["partial"],
                          "tags": table["tags"], "heldout": table["heldout"]["overall"],
                          "seen": table["seen"]["overall"]}))


if __name__ == "__main__":
    main()
