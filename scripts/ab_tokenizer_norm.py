"""What per-position normalisation costs: the `shapes` tokenizer's architecture with norm="group"
and norm="pixel" (random weights), timed in turns in one process.

    python scripts/ab_tokenizer_norm.py --reps 6 --threads 1

A training step (forward, L1 loss, backward) on a batch of 8 64-px crops, as the tokenizer stage
trains, and `encode` of 32 128-px images, as the token stage runs; medians of the reps after the
first.
"""

import argparse
import json
import statistics
import time

import torch

from simplear.train.tokenizer import recipe_config
from simplear.visual_tokenizers.autoencoder import FSQAutoencoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.reps < 2 or args.threads < 1:
        parser.error("--reps must be >= 2 and --threads >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {norm: FSQAutoencoder(recipe_config("shapes", norm=norm).model_config()) for norm in ("group", "pixel")}
    crops = torch.rand(8, 3, 64, 64) * 2 - 1
    images = torch.rand(32, 3, 128, 128) * 2 - 1
    times = {norm: {"train_step_s": [], "encode_s": []} for norm in models}
    for _ in range(args.reps):
        for norm, model in models.items():
            model.train()
            start = time.perf_counter()
            reconstruction, _ = model(crops)
            (reconstruction - crops).abs().mean().backward()
            times[norm]["train_step_s"].append(time.perf_counter() - start)
            model.eval()
            start = time.perf_counter()
            model.encode(images)
            times[norm]["encode_s"].append(time.perf_counter() - start)
    medians = {norm: {k: statistics.median(v[1:]) for k, v in t.items()} for norm, t in times.items()}
    for norm, m in medians.items():
        print(json.dumps({"norm": norm, **{k: round(v, 4) for k, v in m.items()}}))
    print(json.dumps({"pixel_over_group": {k: round(medians["pixel"][k] / medians["group"][k], 3)
                                           for k in medians["group"]}}))


if __name__ == "__main__":
    main()
