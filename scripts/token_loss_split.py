"""Per-token loss of a bundle on a token shard, split into the most common code (the background)
and every other code.

    python scripts/token_loss_split.py BUNDLE SHARD_FOLDER [--images 48]

Teacher-forces each image's first caption + codes of SHARD_FOLDER/shard-00000 and prints the mean
negative log-likelihood (nats) of the background code and of the rest. Used for the
training-scene probes in docs/benchmarks.md.
"""

import argparse
import json

import numpy as np
import torch

from simplear.bundle import load_bundle


@torch.inference_mode()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("shards")
    p.add_argument("--images", type=int, default=48)
    args = p.parse_args()
    bundle = load_bundle(args.bundle)
    model, vocab = bundle.model.eval(), bundle.vocab
    codes = np.load(f"{args.shards}/shard-00000.npy", mmap_mode="r")[: args.images].astype(np.int64)
    with open(f"{args.shards}/shard-00000.jsonl") as f:
        captions = [json.loads(line)["captions"][0] for line in f][: len(codes)]
    background = np.bincount(codes.reshape(-1)).argmax()
    nll = {True: [], False: []}
    for grid, caption in zip(codes, captions):
        flat = torch.from_numpy(grid.reshape(-1))
        prompt = vocab.encode_prompt(caption)
        seq = torch.cat([torch.tensor(prompt), vocab.codes_to_ids(flat)])[None]
        logits = model(seq).logits[0, len(prompt) - 1 : -1, vocab.visual_slice].float()
        per_token = -torch.log_softmax(logits, -1).gather(1, flat[:, None])[:, 0]
        for is_bg in (True, False):
            nll[is_bg] += per_token[(flat == background) == is_bg].tolist()
    print(f"background code {background}: {len(nll[True])} tokens, {np.mean(nll[True]):.3f} nats; "
          f"other codes: {len(nll[False])} tokens, {np.mean(nll[False]):.3f} nats")


if __name__ == "__main__":
    main()
