"""Does a model draw the second named class when the first object is given? Teacher-forced
continuation on validation scenes that name two classes (two objects, position, colour attributes).

For each scene the model draws the whole image from its canonical prompt ("free"), and again with
the scene's own codes forced up to the token where its second object (in raster order) begins
("first object given", the reference sampler's `prefix`). The judge then says which classes each
image holds. If giving a clean first object removes most "one named class twice" images, the model
reads the prompt but is misled by its own first object; if not, it does not use the prompt for the
second object.

    python scripts/prefix_continuation.py runs/recipe23/sft/bundle --scenes runs/recipe23/data/high-val \
        --tokens runs/recipe23/tokens/high-val
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch
from failure_reasons import TWO_CLASS_OUTCOMES, two_class_outcome

TWO_CLASS_TAGS = ("two_object", "position", "color_attr")


def load_scenes(scenes: Path, tokens: Path, downsample: int) -> list[dict]:
    """Two-class scenes with their codes (as trained: the shards) and the token where the second
    object's box begins."""
    rows = [json.loads(line) for line in (scenes / "captions.jsonl").read_text().splitlines() if line.strip()]
    manifest = json.loads((tokens / "manifest.json").read_text())
    if manifest["num_skipped"]:
        raise ValueError(f"{tokens} skipped images, so its rows do not line up with {scenes}")
    codes = np.concatenate([np.load(tokens / f"{s['name']}.npy") for s in manifest["shards"]])
    width = manifest["grid"][1]
    out = []
    for row, grid in zip(rows, codes):
        meta = row["metadata"]
        if meta.get("tag") not in TWO_CLASS_TAGS:
            continue
        if len(row["objects"]) != 2:
            continue
        first, second = sorted(row["objects"], key=lambda o: ((o["box"][1] // downsample) * width
                                                               + o["box"][0] // downsample))
        cut = (second["box"][1] // downsample) * width + second["box"][0] // downsample
        out.append({"prompt": row["captions"][0], "metadata": meta, "codes": torch.from_numpy(grid.astype(np.int64)),
                    "cut": cut, "first_complete": first["box"][3] <= second["box"][1]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--scenes", required=True, help="a ShapesWorld dataset folder (captions.jsonl) at the bundle's resolution")
    ap.add_argument("--tokens", required=True, help="its token shard folder (the codes the model trained on)")
    ap.add_argument("--images", type=int, default=2, help="images per scene and condition")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="only the first N two-class scenes")
    args = ap.parse_args()
    from simplear.bundle import load_bundle
    from simplear.eval.judge import judge_batch
    from simplear.sampling.config import SamplingConfig
    from simplear.sampling.reference import reference_sample
    from simplear.visual_tokenizers.images import tensor_to_pil

    bundle = load_bundle(args.bundle)
    vocab, grid = bundle.vocab, tuple(bundle.config.grid)
    sampling = SamplingConfig.from_dict(bundle.config.sampling.to_dict())
    scenes = load_scenes(Path(args.scenes), Path(args.tokens), bundle.visual_tokenizer.downsample)[: args.limit]
    items = [(s, cond) for s in scenes for cond in ("free", "first object given") for _ in range(args.images)]
    tallies: dict = collections.defaultdict(collections.Counter)
    for n, start in enumerate(range(0, len(items), args.batch_size)):
        chunk = items[start : start + args.batch_size]
        prefix = torch.stack([s["codes"].flatten() for s, _ in chunk])
        lengths = [s["cut"] if cond != "free" else 0 for s, cond in chunk]
        generator = torch.Generator().manual_seed(args.seed * 100_003 + n)
        codes = reference_sample(bundle.model, [vocab.encode_prompt(s["prompt"]) for s, _ in chunk],
                                 [vocab.encode_unconditional()], visual_offset=vocab.visual_offset,
                                 codebook_size=vocab.codebook_size, num_tokens=grid[0] * grid[1], generator=generator,
                                 config=sampling, pad_id=vocab.pad_id, prefix=prefix, prefix_lengths=lengths).codes
        images = tensor_to_pil(bundle.visual_tokenizer.decode(codes.view(-1, *grid)))
        for (scene, cond), verdict in zip(chunk, judge_batch(images, [s["metadata"] for s, _ in chunk])):
            record = {"classes": verdict.details["classes"],
                      "named": sorted({c["class"] for c in scene["metadata"]["include"]})}
            outcome = two_class_outcome(record)
            for key in ((cond, "all"), (cond, scene["metadata"]["tag"]),
                        (cond, "first object complete" if scene["first_complete"] else "objects share rows")):
                tallies[key][outcome] += 1
                tallies[key]["correct"] += bool(verdict.correct)
        print(f"{min(start + args.batch_size, len(items))} / {len(items)} images", flush=True)
    print(json.dumps({"bundle": args.bundle, "sampling": sampling.to_dict(), "scenes": len(scenes),
                      "images_per_scene_and_condition": args.images}))
    for (cond, group), counts in sorted(tallies.items()):
        total = sum(counts[k] for k in TWO_CLASS_OUTCOMES)
        shares = ", ".join(f"{k} {counts[k] / total:.3f}" for k in TWO_CLASS_OUTCOMES)
        print(f"{cond} | {group} | images {total} | correct {counts['correct'] / total:.3f} | {shares}")


if __name__ == "__main__":
    main()
