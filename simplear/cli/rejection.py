"""`simplear data rejection-samples`: a bundle's own images that a reward accepts, as token shards.

Thin: parse arguments, build a `RejectionConfig`, one library call (`simplear.train.rejection`).
Fine-tune on the result with `simplear train ar --init-from BUNDLE data.shards=OUT ...`.
"""

from __future__ import annotations

import argparse


def _rejection_samples(args: argparse.Namespace) -> int:
    import json
    from dataclasses import fields

    from simplear.train.rejection import RejectionConfig, rejection_samples, summary

    given = {f.name: getattr(args, f.name) for f in fields(RejectionConfig) if getattr(args, f.name, None) is not None}
    manifest = rejection_samples(RejectionConfig(**given))
    if args.json:
        print(json.dumps(summary(manifest)))
    return 0


def register(top, groups) -> None:
    p = groups["data"].add_parser(
        "rejection-samples",
        help="draw from a bundle and keep the images a reward accepts, as token shards (for SFT on them)",
        description="Draw K images per training prompt from a model bundle, score them with a reward and "
        "keep those scoring at least --threshold (at most --keep per prompt), as a token shard folder "
        "that `simplear train ar` reads (data.shards=OUT): rejection-sampling fine-tuning. Resumable: "
        "rerun the same command to continue.",
    )
    p.add_argument("--model", dest="bundle", required=True, help="model bundle to draw from")
    p.add_argument("--out", required=True, help="new shard folder (rerun with the same settings to resume)")
    p.add_argument("--prompts", default=None,
                   help="GenEval-schema JSONL of training prompts (default: ShapesWorld's training pool, "
                   "which never names a held-out colour-class pair)")
    p.add_argument("--num-prompts", type=int, default=None, help="prompts drawn from the ShapesWorld pool (default 1024)")
    p.add_argument("--images-per-prompt", type=int, default=None, help="images drawn per prompt (default 4)")
    p.add_argument("--keep", dest="keep_per_prompt", type=int, default=None,
                   help="accepted images kept per prompt at most (default 2)")
    p.add_argument("--reward", default=None, help="reward spec (default shapes:exact: correct and nothing else)")
    p.add_argument("--threshold", type=float, default=None, help="reward an image needs to be kept (default 1.0)")
    p.add_argument("--seed", type=int, default=None, help="prompt pool and sampling seed (default 7)")
    p.add_argument("--cfg-scale", type=float, default=None, help="default: the bundle's")
    p.add_argument("--temperature", type=float, default=None, help="default: the bundle's")
    p.add_argument("--batch-size", type=int, default=None, help="images per sampler call (default 64)")
    p.add_argument("--prompts-per-shard", type=int, default=None, help="default 256")
    p.add_argument("--device", default=None, help="default: CUDA when present, else CPU")
    p.add_argument("--json", action="store_true", help="print the kept count and acceptance per tag as JSON")
    p.set_defaults(func=_rejection_samples)
