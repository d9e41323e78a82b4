"""Judge a training checkpoint (or a bundle) on the whole suite like the recipe's stage evaluation.

A GRPO or AR run keeps checkpoints (`OUT/checkpoints/step-NNNNNN/`) but makes a bundle only at
its end; this scores an intermediate step: BUNDLE supplies the vocabulary, visual tokenizer and
architecture, the checkpoint the weights (rounded through bfloat16 first with --as-bfloat16, as
the recipe's bundles are saved). 553 prompts x 4 images, seed 0, sampler batch 128.

    python scripts/eval_checkpoint.py runs/recipe14c/sft/bundle --checkpoint runs/grpo/checkpoints/step-000100 \
        --cfg-scale 2.0 --as-bfloat16
    python scripts/eval_checkpoint.py runs/grpo/bundle            # a bundle with its own sampling settings
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--checkpoint", default=None, help="a checkpoint folder whose weights replace the bundle's")
    ap.add_argument("--as-bfloat16", action="store_true", help="round the weights through bfloat16 first")
    ap.add_argument("--cfg-scale", type=float, default=None, help="default: the bundle's own")
    ap.add_argument("--temperature", type=float, default=None, help="default: the bundle's own")
    ap.add_argument("--top-k", type=int, default=None, help="default: the bundle's own (0: off)")
    ap.add_argument("--top-p", type=float, default=None, help="default: the bundle's own (1.0: off)")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    import torch

    from simplear.bundle import load_bundle
    from simplear.eval.suite import make_suite
    from simplear.sampling.config import SamplingConfig
    from simplear.train.checkpoint import load_checkpoint, load_model_state
    from simplear.train.suite_eval import evaluate_bundle

    bundle = load_bundle(args.bundle)
    step = None
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        load_model_state(bundle.model, ckpt["model"])
        step = ckpt["state"].get("step")
    if args.as_bfloat16:
        bundle.model.to(torch.bfloat16).float()
    bundle.model.eval()
    sampling = bundle.config.sampling.to_dict()
    for key in ("cfg_scale", "temperature", "top_k", "top_p"):
        if getattr(args, key) is not None:
            sampling[key] = getattr(args, key)
    result = evaluate_bundle(bundle, make_suite(seed=0), images_per_prompt=4, seed=0, batch_size=args.batch_size,
                             sampling=SamplingConfig.from_dict(sampling))
    print(json.dumps({"step": step, "overall": result["overall"], "tags": result["tags"], "sampling": sampling,
                      "heldout": result.get("heldout", {}).get("overall"),
                      "seen": result.get("seen", {}).get("overall"), "seconds": result["seconds"]}))


if __name__ == "__main__":
    main()
