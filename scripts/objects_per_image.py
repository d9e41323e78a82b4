"""What a bundle draws for one tag of the suite: how many objects the detector finds per image,
and why the wrong images are wrong (no object, a named class missing, or every named class
present but a count, colour or relation wrong). Same images as the recipe's stage evaluation
(553-prompt suite, 4 images per prompt, seed 0, sampler batch 128) for the prompts of that tag.

    python scripts/objects_per_image.py simplear/assets/default two_object
    python scripts/objects_per_image.py runs/recipe9/sft/bundle colors --cfg-scale 3.0
"""

from __future__ import annotations

import argparse
import collections


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("tag")
    ap.add_argument("--cfg-scale", type=float, default=None, help="default: the bundle's own")
    ap.add_argument("--temperature", type=float, default=None, help="default: the bundle's own")
    args = ap.parse_args()
    import torch

    from simplear.bundle import load_bundle
    from simplear.eval.detector import detect
    from simplear.eval.judge import judge
    from simplear.eval.suite import make_suite
    from simplear.sampling.config import SamplingConfig
    from simplear.train.suite_eval import generate_codes

    bundle = load_bundle(args.bundle)
    bundle.model.eval()
    settings = bundle.config.sampling.to_dict()
    for key in ("cfg_scale", "temperature"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    sampling = SamplingConfig.from_dict(settings)
    suite = [m for m in make_suite(seed=0) if m["tag"] == args.tag]
    if not suite:
        raise SystemExit(f"no prompts with tag {args.tag!r} in the suite")
    metas = [m for m in suite for _ in range(4)]
    codes = generate_codes(bundle, [m["prompt"] for m in metas], seed=0, sampling=sampling, batch_size=128)
    images = []
    with torch.inference_mode():
        for i in range(0, len(codes), 16):
            x = bundle.visual_tokenizer.decode(codes[i : i + 16])
            images += [((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy() for t in x]
    per_image, why = collections.Counter(), collections.Counter()
    for image, meta in zip(images, metas):
        found = [d.cls for d in detect(image)]
        per_image[len(found)] += 1
        if judge(image, meta).correct:
            why["correct"] += 1
            continue
        named = [c["class"] for c in meta["include"]]
        if not found:
            why["no object"] += 1
        elif all(c in found for c in named):
            why["every named class present; a count, colour or relation wrong"] += 1
        elif len(set(named)) > 1 and len(set(found)) == 1:
            why["a named class missing; every object of one class"] += 1
        else:
            why["a named class missing; objects of several classes"] += 1
    print(f"{args.bundle} {args.tag} (CFG {sampling.cfg_scale}, T {sampling.temperature}): {len(images)} images")
    print("objects found per image:", ", ".join(f"{k}: {v}" for k, v in sorted(per_image.items())))
    for reason, count in why.most_common():
        print(f"{count:5d}  {reason}")


if __name__ == "__main__":
    main()
