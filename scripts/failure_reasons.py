"""Judge a bundle on the whole suite (553 prompts x 4 images, the recipe's stage evaluation) and
count the judge's first failure reason per tag, to see what a model gets wrong.

    python scripts/failure_reasons.py simplear/assets/default --records records.json
    python scripts/failure_reasons.py runs/recipe9/sft/bundle --cfg-scale 3.0   # another guidance
"""

from __future__ import annotations

import argparse
import collections
import json

TWO_CLASS_OUTCOMES = ("both named classes", "one named class twice, the other missing",
                      "another class drawn, a named one missing", "a named class missing, nothing instead")


def two_class_outcome(record: dict) -> str:
    """What an image for a prompt naming two classes holds, by the classes the judge counted."""
    classes = record["classes"]
    missing = [c for c in record["named"] if not classes.get(c)]
    if not missing:
        return TWO_CLASS_OUTCOMES[0]
    if any(c not in record["named"] for c in classes):
        return TWO_CLASS_OUTCOMES[2]
    present = [c for c in record["named"] if classes.get(c)]
    if present and classes[present[0]] >= 2:
        return TWO_CLASS_OUTCOMES[1]
    return TWO_CLASS_OUTCOMES[3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--records", default=None, help="also write every image's verdict here (JSON)")
    ap.add_argument("--cfg-scale", type=float, default=None, help="default: the bundle's own")
    ap.add_argument("--temperature", type=float, default=None, help="default: the bundle's own")
    args = ap.parse_args()
    from simplear.bundle import load_bundle
    from simplear.eval.suite import make_suite
    from simplear.sampling.config import SamplingConfig
    from simplear.train.suite_eval import evaluate_bundle

    bundle = load_bundle(args.bundle)
    sampling = bundle.config.sampling.to_dict()
    for key in ("cfg_scale", "temperature"):
        if getattr(args, key) is not None:
            sampling[key] = getattr(args, key)
    records: list[dict] = []
    suite = make_suite(seed=0)
    result = evaluate_bundle(bundle, suite, images_per_prompt=4, seed=0, batch_size=args.batch_size,
                             records_out=records, sampling=SamplingConfig.from_dict(sampling))
    for record, meta in zip(records, (m for m in suite for _ in range(4))):
        record["named"] = sorted({c["class"] for c in meta["include"]})
    print(json.dumps({"overall": result["overall"], "tags": result["tags"], "sampling": sampling,
                      "heldout": result.get("heldout", {}).get("overall"), "seconds": result["seconds"]}))
    if args.records:
        with open(args.records, "w") as f:
            json.dump(records, f)
    for tag in sorted({r["tag"] for r in records}):
        reasons = collections.Counter(r["reason"].split("\n")[0] for r in records if r["tag"] == tag and not r["correct"])
        total = sum(r["tag"] == tag for r in records)
        print(f"{tag}: {sum(reasons.values())} of {total} wrong; first reasons: {reasons.most_common(6)}")
    # Prompts naming two different classes (two objects, position, colour attributes): which
    # classes the judge counted when one of the two is missing.
    for tag in sorted({r["tag"] for r in records if len(r["named"]) == 2}):
        kinds = collections.Counter(two_class_outcome(r) for r in records if r["tag"] == tag and len(r["named"]) == 2)
        total = sum(kinds.values())
        print(f"classes {tag}: " + ", ".join(f"{k} {kinds[k] / total:.3f}" for k in TWO_CLASS_OUTCOMES))
    # Objects the judge counted against the number the prompt names (GenEval's rules check excess
    # only on counting prompts).
    for tag in sorted({r["tag"] for r in records}) + ["all"]:
        rows = [r for r in records if tag in ("all", r["tag"])]
        more = sum(r["objects"] > r["asked"] for r in rows) / len(rows)
        fewer = sum(r["objects"] < r["asked"] for r in rows) / len(rows)
        print(f"objects {tag}: more than asked {more:.3f}, as many {1 - more - fewer:.3f}, fewer {fewer:.3f}")


if __name__ == "__main__":
    main()
