"""Which suite round trips a visual tokenizer loses, by class and tag, and the judge's reasons.

`simplear eval tokenizer` gives one accuracy per resolution; this splits the failures: the 553
suite prompts' ground-truth renders (image 0 of each, as `simplear eval tokenizer` draws them) are
encoded and decoded at RESOLUTION, judged, and the failures counted per named class (a prompt
counts once for each class it names), per tag, and by the judge's first reason.

    python scripts/roundtrip_failures.py simplear/assets/default/visual_tokenizer --resolution 64
    python scripts/roundtrip_failures.py runs/tok/dec64 --resolution 128 --save-pairs /tmp/pairs --pairs 16
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokenizer", help="a visual tokenizer folder")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--save-pairs", default=None, help="also save the first --pairs originals and round trips here")
    ap.add_argument("--pairs", type=int, default=16)
    args = ap.parse_args()
    import torch

    from simplear.eval.judge import judge_batch
    from simplear.train.tokenizer_eval import suite_lines, suite_renders
    from simplear.visual_tokenizers import load_visual_tokenizer
    from simplear.visual_tokenizers.images import pil_to_tensor, tensor_to_pil

    tokenizer = load_visual_tokenizer(args.tokenizer)
    metadatas = suite_lines(0, 553)
    originals = suite_renders(metadatas, 0, args.resolution)
    round_trips = []
    with torch.inference_mode():
        for start in range(0, len(originals), args.batch_size):
            x = pil_to_tensor(originals[start : start + args.batch_size])
            round_trips += tensor_to_pil(tokenizer.decode(tokenizer.encode(x)).cpu())
    verdicts = judge_batch(round_trips, metadatas)

    named, failed, tag_all, tag_failed, reasons = (collections.Counter() for _ in range(5))
    for meta, verdict in zip(metadatas, verdicts):
        classes = {clause["class"] for clause in meta["include"]}
        named.update(classes)
        tag_all[meta["tag"]] += 1
        if not verdict.correct:
            failed.update(classes)
            tag_failed[meta["tag"]] += 1
            reasons[verdict.reason.split(";")[0]] += 1
    passed = sum(v.correct for v in verdicts)
    print(json.dumps({"tokenizer": args.tokenizer, "resolution": args.resolution, "passed": passed,
                      "prompts": len(verdicts), "accuracy": passed / len(verdicts),
                      "failed_by_class": {c: [failed[c], named[c]] for c in sorted(named)},
                      "failed_by_tag": {t: [tag_failed[t], tag_all[t]] for t in sorted(tag_all)}}))
    for reason, n in reasons.most_common(10):
        print(f"{n:5d}  {reason}")
    if args.save_pairs:
        out = Path(args.save_pairs)
        out.mkdir(parents=True, exist_ok=True)
        for i in range(min(args.pairs, len(originals))):
            originals[i].save(out / f"{i:03d}-original.png")
            round_trips[i].save(out / f"{i:03d}-roundtrip.png")


if __name__ == "__main__":
    main()
