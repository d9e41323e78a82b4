"""Does a model draw better when, while it draws, its codes are swapped for the tokenizer's codes of
the same picture? An inference-time test of the exposure-bias explanation for "one named class
drawn twice" (docs/benchmarks.md).

Plain: the reference sampler draws every code. Re-encoded: it draws `--rows` rows at a time; after
each block the image so far is decoded (rows not drawn yet set to the image's most common code,
the background), re-encoded by the bundle's own tokenizer, and the next block is drawn with the
re-encoded codes forced in place of the model's, except the last `--margin` drawn rows, which stay
the model's own (their re-encoding sees the placeholder rows below them). Both draw the suite's
prompts of the chosen tags with the same seeds and are judged alike.

    python scripts/recode_sampling.py runs/recipe26/sft/bundle --tags two_object position color_attr
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import torch
from failure_reasons import TWO_CLASS_OUTCOMES, two_class_outcome


def background_filled(drawn: torch.Tensor, height: int) -> torch.Tensor:
    """B x rows x W drawn codes grown to B x height x W with each image's most common drawn code."""
    background = torch.mode(drawn.flatten(1), dim=1).values
    rest = background[:, None, None].expand(-1, height - drawn.shape[1], drawn.shape[2])
    return torch.cat([drawn, rest], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--tags", nargs="+", default=["two_object", "position", "color_attr"])
    ap.add_argument("--images", type=int, default=2, help="images per prompt and way of drawing")
    ap.add_argument("--rows", type=int, default=2, help="token rows drawn between re-encodings")
    ap.add_argument("--margin", type=int, default=1, help="last drawn rows kept as the model's own codes")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="only the first N prompts of each tag")
    args = ap.parse_args()
    if args.rows < 1 or args.margin < 0:
        ap.error("--rows must be >= 1 and --margin >= 0")
    from simplear.bundle import load_bundle
    from simplear.eval.judge import judge_batch
    from simplear.eval.suite import make_suite
    from simplear.sampling.config import SamplingConfig
    from simplear.sampling.reference import reference_sample
    from simplear.visual_tokenizers.images import tensor_to_pil

    bundle = load_bundle(args.bundle)
    vocab, vt = bundle.vocab, bundle.visual_tokenizer
    height, width = (int(v) for v in bundle.config.grid)
    sampling = SamplingConfig.from_dict(bundle.config.sampling.to_dict())
    lines = [m for tag in args.tags for m in [m for m in make_suite(seed=0) if m["tag"] == tag][: args.limit]]
    if not lines:
        ap.error(f"no suite prompts with tags {args.tags}")
    lines = [m for m in lines for _ in range(args.images)]

    def sample(prompts, tokens, prefix, lengths, seed):
        generator = torch.Generator().manual_seed(seed)
        return reference_sample(bundle.model, [vocab.encode_prompt(p) for p in prompts], [vocab.encode_unconditional()],
                                visual_offset=vocab.visual_offset, codebook_size=vocab.codebook_size,
                                num_tokens=tokens, generator=generator, config=sampling, pad_id=vocab.pad_id,
                                prefix=prefix, prefix_lengths=lengths).codes

    def draw(prompts, seed, recode: bool):
        if not recode:
            return sample(prompts, height * width, None, None, seed).view(-1, height, width)
        prefix, rows = None, 0
        while rows < height:
            rows = min(rows + args.rows, height)
            codes = sample(prompts, rows * width, prefix, None, seed + rows).view(-1, rows, width)
            if rows == height:
                return codes
            with torch.inference_mode():
                recoded = vt.encode(vt.decode(background_filled(codes, height)))
            keep = max(rows - args.margin, 0)
            prefix = torch.cat([recoded[:, :keep], codes[:, keep:rows]], 1).flatten(1)

    results = {}
    for way in ("plain", "re-encoded"):
        started, verdicts = time.perf_counter(), []
        for n, start in enumerate(range(0, len(lines), args.batch_size)):
            chunk = lines[start:start + args.batch_size]
            codes = draw([m["prompt"] for m in chunk], args.seed * 100_003 + n * 101, way == "re-encoded")
            verdicts += judge_batch(tensor_to_pil(vt.decode(codes)), chunk)
            print(f"{way}: {start + len(chunk)} / {len(lines)} images", flush=True)
        results[way] = (verdicts, time.perf_counter() - started)
    print(json.dumps({"bundle": args.bundle, "sampling": sampling.to_dict(), "tags": args.tags,
                      "images_per_prompt": args.images, "rows": args.rows, "margin": args.margin}))
    for way, (verdicts, seconds) in results.items():
        for tag in args.tags:
            rows = [(m, v) for m, v in zip(lines, verdicts) if m["tag"] == tag]
            kinds = collections.Counter()
            for m, v in rows:
                named = sorted({c["class"] for c in m["include"]})
                if len(named) == 2:
                    kinds[two_class_outcome({"classes": v.details["classes"], "named": named})] += 1
            total = sum(kinds.values())
            shares = ", ".join(f"{k} {kinds[k] / total:.3f}" for k in TWO_CLASS_OUTCOMES) if total else ""
            correct = sum(v.correct for _, v in rows) / len(rows)
            print(f"{way} | {tag} | images {len(rows)} | correct {correct:.3f} | {shares}")
        print(f"{way} | all | correct {sum(v.correct for v in verdicts) / len(verdicts):.3f} | {seconds:.1f} s")


if __name__ == "__main__":
    main()
