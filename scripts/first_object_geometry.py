"""How the first object (in raster order) of a drawn two-class image differs between images that
hold both named classes and images that hold one of them twice, and from real scenes' first objects.

For the suite's prompts naming two classes (two objects, position, colour attributes) the bundle
draws `--images` images each with the fast engine at its own sampling settings; for every image
where the judge counted exactly two objects, the first object's box (width, height, top row), the
distance between the two boxes' centres, and whether the first object is of the prompt's
first-named class are averaged per outcome. `--scenes` adds the same figures for a ShapesWorld
dataset folder's two-object scenes (their true boxes), the first objects that the model continues
correctly when they are given (scripts/prefix_continuation.py).

    python scripts/first_object_geometry.py runs/recipe26/sft/bundle --scenes runs/recipe26/data/high-val
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from failure_reasons import TWO_CLASS_OUTCOMES, two_class_outcome
from prefix_continuation import TWO_CLASS_TAGS, start_token


def geometry(first: dict, second: dict, named_first: str) -> dict:
    """Figures of one image's first object (boxes x0, y0, x1, y1 in pixels)."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = first["box"], second["box"]
    centre = (((ax0 + ax1) - (bx0 + bx1)) ** 2 + ((ay0 + ay1) - (by0 + by1)) ** 2) ** 0.5 / 2
    return {"width": ax1 - ax0, "height": ay1 - ay0, "top": ay0, "second width": bx1 - bx0,
            "centre distance": centre, "first-named class first": float(first["class"] == named_first),
            "same colour": float(first["color"] == second["color"])}


def named_first(meta: dict) -> str:
    """The class the prompt names first: in position prompts ("a star above a square") the placed
    object, listed second in `include` after its reference."""
    include = meta["include"]
    return include[1]["class"] if meta.get("tag") == "position" else include[0]["class"]


def summarise(groups: dict) -> None:
    for name, rows in groups.items():
        if not rows:
            continue
        means = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        print(f"{name} | images {len(rows)} | " + " | ".join(f"{k} {v:.2f}" for k, v in means.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--scenes", default=None, help="a ShapesWorld dataset folder (captions.jsonl) to compare with")
    ap.add_argument("--images", type=int, default=4, help="images per prompt")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from simplear.bundle import load_bundle
    from simplear.eval.judge import judge_batch
    from simplear.eval.suite import make_suite
    from simplear.sampling.config import SamplingConfig
    from simplear.train.suite_eval import generate_codes
    from simplear.visual_tokenizers.images import tensor_to_pil

    bundle = load_bundle(args.bundle)
    down, width = int(bundle.visual_tokenizer.downsample), int(bundle.config.grid[1])
    sampling = SamplingConfig.from_dict(bundle.config.sampling.to_dict())
    lines = [m for m in make_suite(seed=0) if m["tag"] in TWO_CLASS_TAGS for _ in range(args.images)]
    codes = generate_codes(bundle, [m["prompt"] for m in lines], seed=args.seed, sampling=sampling,
                           batch_size=args.batch_size)
    groups: dict = collections.defaultdict(list)
    for start in range(0, len(lines), args.batch_size):
        chunk = lines[start:start + args.batch_size]
        images = tensor_to_pil(bundle.visual_tokenizer.decode(codes[start:start + args.batch_size]))
        for meta, verdict in zip(chunk, judge_batch(images, chunk)):
            named = [c["class"] for c in meta["include"]]
            if verdict.details["counted"] != 2 or len(set(named)) != 2:
                continue
            kind = two_class_outcome({"classes": verdict.details["classes"], "named": sorted(named)})
            if kind not in TWO_CLASS_OUTCOMES[:2]:
                continue
            top = sorted(verdict.details["detections"], key=lambda d: -d["confidence"])[:2]
            first, second = sorted(top, key=lambda d: start_token(d["box"], down, width))
            groups[f"drawn, {kind}"].append(geometry(first, second, named_first(meta)))
    if args.scenes:
        for line in (Path(args.scenes) / "captions.jsonl").read_text().splitlines():
            row = json.loads(line) if line.strip() else None
            if not row or row["metadata"].get("tag") not in TWO_CLASS_TAGS or len(row["objects"]) != 2:
                continue
            first, second = sorted(row["objects"], key=lambda o: start_token(o["box"], down, width))
            groups["real scenes (given as the first object: 1 % duplicates)"].append(
                geometry(first, second, named_first(row["metadata"])))
    print(json.dumps({"bundle": args.bundle, "sampling": sampling.to_dict(), "images_per_prompt": args.images,
                      "prompts": len(lines) // args.images}))
    summarise(groups)


if __name__ == "__main__":
    main()
