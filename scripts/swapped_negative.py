"""Guidance against the colour-swapped prompt instead of the empty one, on the suite's color_attr prompts.

For "a photo of a blue heart and a red star" the negative branch of CFG gets "a photo of a red
heart and a blue star" (the two colours swapped, GenEval's phrasing), so guidance pushes away from
the wrong binding only. Both conditions draw the 100 color_attr prompts x 4 images with the same
seeds (one generator per batch of 100), at the bundle's temperature and the given CFG, and are
judged.

    python scripts/swapped_negative.py simplear/assets/default --cfg-scale 2.0
"""

from __future__ import annotations

import argparse
import copy
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--cfg-scale", type=float, default=None, help="default: the bundle's own")
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    import torch

    from simplear.bundle import load_bundle
    from simplear.data.captions import canonical_prompt
    from simplear.eval.judge import judge_batch
    from simplear.eval.suite import make_suite
    from simplear.sampling.config import SamplingConfig
    from simplear.sampling.engine import FastEngine
    from simplear.visual_tokenizers.images import tensor_to_pil

    bundle = load_bundle(args.bundle)
    bundle.model.eval()
    vocab, grid = bundle.vocab, tuple(bundle.config.grid)
    sampling = bundle.config.sampling.to_dict()
    if args.cfg_scale is not None:
        sampling["cfg_scale"] = args.cfg_scale
    config = SamplingConfig.from_dict(sampling)
    items = [m for m in make_suite(seed=0) if m["tag"] == "color_attr" for _ in range(4)]

    def swapped(meta: dict) -> str:
        meta = copy.deepcopy(meta)
        first, second = meta["include"]
        first["color"], second["color"] = second["color"], first["color"]
        return canonical_prompt(meta)

    engine = FastEngine(bundle.model, vocab.visual_offset, vocab.codebook_size)
    for mode in ("unconditional", "swapped"):
        started, correct = time.perf_counter(), []
        for n, start in enumerate(range(0, len(items), args.batch_size)):
            chunk = items[start : start + args.batch_size]
            cond = [vocab.encode_prompt(m["prompt"]) for m in chunk]
            negative = ([vocab.encode_unconditional()] * len(chunk) if mode == "unconditional"
                        else [vocab.encode_negative(swapped(m)) for m in chunk])
            generator = torch.Generator().manual_seed(1000 + n)
            result = engine.sample(cond, negative, num_tokens=grid[0] * grid[1], generator=generator,
                                   config=config, pad_id=vocab.pad_id)
            images = tensor_to_pil(bundle.visual_tokenizer.decode(result.codes.view(-1, *grid)))
            correct += [v.correct for v in judge_batch(images, chunk)]
        print(json.dumps({"negative": mode, "cfg_scale": config.cfg_scale, "images": len(correct),
                          "color_attr": sum(correct) / len(correct),
                          "seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
