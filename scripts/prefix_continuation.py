"""Does a model draw the second named class when the first object is given? Teacher-forced
continuation on validation scenes that name two classes (two objects, position, colour attributes).

For each scene the model draws the whole image from its canonical prompt ("free"), and again with
the scene's own codes forced up to the token where its second object (in raster order) begins
("first object given", the reference sampler's `prefix`). The judge then says which classes each
image holds. If giving a clean first object removes most "one named class twice" images, the model
reads the prompt but is misled by its own first object; if not, it does not use the prompt for the
second object. `--own K` also continues each free image that holds two objects K times from where
its own second object begins, kept apart by what the free image held; `--recoded` continues the
tokenizer's re-encoding of the same picture too (its codes, not the model's, up to that token).

    python scripts/prefix_continuation.py runs/recipe23/sft/bundle --scenes runs/recipe23/data/high-val \
        --tokens runs/recipe23/tokens/high-val
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch
from failure_reasons import TWO_CLASS_OUTCOMES, two_class_outcome

TWO_CLASS_TAGS = ("two_object", "position", "color_attr")


def start_token(box, down: int, width: int) -> int:
    """The raster index of the token holding a pixel box's top-left corner."""
    return (int(box[1]) // down) * width + int(box[0]) // down


def load_scenes(scenes: Path, shards, down: int, width: int) -> list[dict]:
    """Two-class scenes with their codes as trained (`shards`: the set's TokenShardDataset) and the
    token where the second object's box begins."""
    rows = [json.loads(line) for line in (scenes / "captions.jsonl").read_text().splitlines() if line.strip()]
    if len(rows) != len(shards):
        raise ValueError(f"{scenes} has {len(rows)} scenes but its token shards {len(shards)} (skipped images?)")
    out = []
    for i, row in enumerate(rows):
        meta = row["metadata"]
        if meta.get("tag") not in TWO_CLASS_TAGS or len(row["objects"]) != 2:
            continue
        tokens = shards[i]
        if tokens["captions"] != row["captions"]:
            raise ValueError(f"scene {i} of {scenes} and its token row name other captions: not the same set")
        first, second = sorted(row["objects"], key=lambda o: start_token(o["box"], down, width))
        out.append({"prompt": row["captions"][0], "metadata": meta, "codes": tokens["codes"].flatten(),
                    "cut": start_token(second["box"], down, width), "first_complete": first["box"][3] <= second["box"][1]})
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
    ap.add_argument("--own", type=int, default=0, metavar="K",
                    help="also continue each free image with two objects K times from where its own second "
                         "object begins (is its first object what misleads the model?)")
    ap.add_argument("--recoded", action="store_true",
                    help="with --own: also continue from the tokenizer's re-encoding of each such image "
                         "(the same picture in the codes the model trained on)")
    args = ap.parse_args()
    if args.recoded and not args.own:
        ap.error("--recoded needs --own K (it continues the images --own keeps)")
    from simplear.bundle import load_bundle
    from simplear.data.token_dataset import TokenShardDataset
    from simplear.eval.judge import judge_batch
    from simplear.sampling.config import SamplingConfig
    from simplear.sampling.reference import reference_sample
    from simplear.visual_tokenizers.images import tensor_to_pil

    bundle = load_bundle(args.bundle)
    vocab, grid = bundle.vocab, tuple(bundle.config.grid)
    sampling = SamplingConfig.from_dict(bundle.config.sampling.to_dict())
    down, width = bundle.visual_tokenizer.downsample, grid[1]
    shards = TokenShardDataset(args.tokens, visual_tokenizer=bundle.visual_tokenizer, resolution=grid[0] * down)
    scenes = load_scenes(Path(args.scenes), shards, down, width)[: args.limit]
    tallies: dict = collections.defaultdict(collections.Counter)

    def draw(prompts, prefix, lengths, metadata, seed):
        """(codes, verdict) per image, in sampler batches."""
        out = []
        for n, start in enumerate(range(0, len(prompts), args.batch_size)):
            end = start + args.batch_size
            generator = torch.Generator().manual_seed(seed * 100_003 + n)
            codes = reference_sample(bundle.model, [vocab.encode_prompt(p) for p in prompts[start:end]],
                                     [vocab.encode_unconditional()], visual_offset=vocab.visual_offset,
                                     codebook_size=vocab.codebook_size, num_tokens=grid[0] * grid[1],
                                     generator=generator, config=sampling, pad_id=vocab.pad_id,
                                     prefix=prefix[start:end], prefix_lengths=lengths[start:end]).codes
            images = tensor_to_pil(bundle.visual_tokenizer.decode(codes.view(-1, *grid)))
            out += list(zip(codes, judge_batch(images, metadata[start:end])))
            print(f"{min(end, len(prompts))} / {len(prompts)} images", flush=True)
        return out

    def outcome(scene, verdict):
        return two_class_outcome({"classes": verdict.details["classes"],
                                  "named": sorted({c["class"] for c in scene["metadata"]["include"]})})

    items = [(s, cond) for s in scenes for cond in ("free", "first object given") for _ in range(args.images)]
    drawn = draw([s["prompt"] for s, _ in items], torch.stack([s["codes"] for s, _ in items]),
                 [s["cut"] if cond != "free" else 0 for s, cond in items], [s["metadata"] for s, _ in items], args.seed)
    for (scene, cond), (_, verdict) in zip(items, drawn):
        kind = outcome(scene, verdict)
        for key in ((cond, "all"), (cond, scene["metadata"]["tag"]),
                    (cond, "first object complete" if scene["first_complete"] else "objects share rows")):
            tallies[key][kind] += 1
            tallies[key]["correct"] += bool(verdict.correct)
    if args.own:
        # The model's own first object: free images with exactly two counted objects, continued
        # `args.own` times from the token where their second object's box begins.
        again, first_boxes = [], []
        for (scene, cond), (codes, verdict) in zip(items, drawn):
            if cond != "free" or verdict.details["counted"] != 2:
                continue
            boxes = [d["box"] for d in sorted(verdict.details["detections"], key=lambda d: -d["confidence"])[:2]]
            boxes.sort(key=lambda b: start_token(b, down, width))
            first_boxes.append((codes, boxes[0], outcome(scene, verdict)))
            again += [(scene, codes, start_token(boxes[1], down, width), first_boxes[-1][2], "kept")] * args.own
        # How far the model's codes for its first object are from the tokenizer's own codes of what
        # they decode to: the share of the object's box tokens that re-encoding changes. With
        # --recoded the re-encoded codes (what the tokenizer makes of the same picture) are also
        # continued: if that undoes the duplicates, the codes, not the drawn object, mislead.
        if first_boxes:
            own = torch.stack([c for c, _, _ in first_boxes]).view(-1, *grid)
            with torch.inference_mode():
                recoded = bundle.visual_tokenizer.encode(bundle.visual_tokenizer.decode(own))
            for codes, recode, (_, box, kind) in zip(own, recoded, first_boxes):
                x0, y0, x1, y1 = (int(v) for v in box)
                rows, cols = slice(y0 // down, -(-y1 // down)), slice(x0 // down, -(-x1 // down))
                key = ("own first object, tokens re-encoding changes", kind)
                tallies[key]["sum"] += (recode[rows, cols] != codes[rows, cols]).float().mean().item()
                tallies[key]["n"] += 1
            if args.recoded:
                kept = [a for a in again if a[4] == "kept"]
                by_codes = {id(c): r.flatten() for (c, _, _), r in zip(first_boxes, recoded)}
                again += [(scene, by_codes[id(codes)], cut, before, "re-encoded") for scene, codes, cut, before, _ in kept]
        redrawn = draw([a[0]["prompt"] for a in again], torch.stack([a[1] for a in again]) if again else None,
                       [a[2] for a in again] if again else None, [a[0]["metadata"] for a in again], args.seed + 1)
        for (scene, _, _, before, how), (_, verdict) in zip(again, redrawn):
            key = (f"own first object {how}", f"the free image: {before}")
            tallies[key][outcome(scene, verdict)] += 1
            tallies[key]["correct"] += bool(verdict.correct)
    print(json.dumps({"bundle": args.bundle, "sampling": sampling.to_dict(), "scenes": len(scenes),
                      "images_per_scene_and_condition": args.images}))
    for (cond, group), counts in sorted(tallies.items()):
        if "n" in counts:
            print(f"{cond} | the free image: {group} | images {counts['n']} | mean share {counts['sum'] / counts['n']:.3f}")
            continue
        total = sum(counts[k] for k in TWO_CLASS_OUTCOMES)
        if not total:
            continue
        shares = ", ".join(f"{k} {counts[k] / total:.3f}" for k in TWO_CLASS_OUTCOMES)
        print(f"{cond} | {group} | images {total} | correct {counts['correct'] / total:.3f} | {shares}")


if __name__ == "__main__":
    main()
