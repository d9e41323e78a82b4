"""Write a GRPO training prompt pool (GenEval metadata JSONL) with chosen tag weights.

    python scripts/grpo_prompt_pool.py OUT.jsonl [--weights two_object=1.5,position=1.5,...] [--size 4096]
                                       [--seed 1]

The default pool of `simplear train grpo` (no `--prompts`) is this with every tag weighted 1 and
seed = the run's seed + 1; tags not named here keep weight 1. Like it, the pool never holds a
held-out (colour, class) pair. Pass the file to `simplear train grpo --prompts OUT.jsonl`.
"""

import argparse
import json

import numpy as np

from simplear.data.captions import canonical_prompt
from simplear.data.shapes import TAGS, ShapesConfig, sample_metadata
from simplear.utils import atomic_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--weights", default="", help="comma-separated TAG=WEIGHT")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    weights = dict.fromkeys(TAGS, 1.0)
    for item in filter(None, args.weights.split(",")):
        tag, _, value = item.partition("=")
        if tag not in weights:
            parser.error(f"unknown tag {tag!r}; choose from {', '.join(TAGS)}")
        weights[tag] = float(value)
    rng = np.random.default_rng(args.seed)
    config = ShapesConfig(tag_weights=tuple(weights.items()))
    with atomic_path(args.out) as tmp, open(tmp, "w") as f:
        for _ in range(args.size):
            line = sample_metadata(rng, config)
            f.write(json.dumps({**line, "prompt": canonical_prompt(line)}) + "\n")
    print(f"{args.size} prompts -> {args.out} (tag weights {weights})")


if __name__ == "__main__":
    main()
