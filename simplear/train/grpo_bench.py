"""Benchmark: seconds per GRPO step for the embedded model's shape, on this machine.

`python -m simplear.train.grpo_bench [--device D] [--steps N] [--prompts-per-step P] [--group-size G]`
builds the `shapes` model preset (random weights: speed does not depend on them) over a 512-token
caption vocabulary and a 1,000-code FSQ autoencoder at 128 px (16x16 codes), and runs GRPO steps
with the judge's reward and the recipe's GRPO settings. It prints the mean step time and its
parts (rollout sampling + log-probs, reward, optimisation) from the run's log, so the recipe's
GRPO budget can be planned. It is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def build_bench_bundle(resolution: int = 128, preset: str = "shapes", device: str | None = None):
    """A bundle of the embedded model's shape with random weights (no training needed for speed)."""
    import numpy as np

    from simplear.bundle import Bundle, SamplingDefaults, make_bundle_config
    from simplear.data.captions import canonical_prompt
    from simplear.data.shapes import ShapesConfig, sample_metadata
    from simplear.model import build_model
    from simplear.utils import pick_device
    from simplear.visual_tokenizers import FSQAutoencoder, FSQAutoencoderConfig
    from simplear.vocab import Vocabulary, train_text_tokenizer

    rng = np.random.default_rng(0)
    captions = [canonical_prompt(sample_metadata(rng, ShapesConfig())) for _ in range(2000)]
    vt = FSQAutoencoder(FSQAutoencoderConfig()).eval()
    vocab = Vocabulary(train_text_tokenizer(captions, vocab_size=512), vt.codebook_size)
    model = build_model(preset, vocab.vocab_size, seed=0)
    device = pick_device(device)
    config = make_bundle_config(vocab, vt, resolution, sampling=SamplingDefaults(cfg_scale=3.0, temperature=1.0))
    return Bundle(model=model.to(device), vocab=vocab, visual_tokenizer=vt.to(device), config=config)


def main(argv: list[str] | None = None) -> dict:
    import torch

    from simplear.train.grpo import GRPOConfig, train_grpo
    from simplear.train.recipe import grpo_defaults

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts-per-step", type=int, default=grpo_defaults()["prompts_per_step"])
    parser.add_argument("--group-size", type=int, default=grpo_defaults()["group_size"])
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--eval-images", type=int, default=0,
                        help="instead of GRPO steps, time the suite evaluation (generate + judge) on N prompts")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = build_bench_bundle(args.resolution, device=args.device)
    if args.eval_images:
        return _bench_eval(bundle, args.eval_images)
    fields = {**grpo_defaults(), "steps": args.steps, "prompts_per_step": args.prompts_per_step,
              "group_size": args.group_size, "eval_every": 0, "checkpoint_every": 10**9, "progress": False}
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        train_grpo(GRPOConfig(out=out, device=args.device, **fields), bundle=bundle)
        total = time.perf_counter() - started
        log = [json.loads(line) for line in open(f"{out}/log.jsonl") if '"train"' in line]
    timed = log[1:] or log  # the first step pays one-off costs (allocation, warm-up)
    result = {
        "device": str(next(bundle.model.parameters()).device),
        "threads": torch.get_num_threads(),
        "images_per_step": args.prompts_per_step * args.group_size,
        "tokens_per_image": int(bundle.config.grid[0] * bundle.config.grid[1]),
        "steps_timed": len(timed),
        "seconds_per_step": sum(r["seconds"] for r in timed) / len(timed),
        "rollout_tokens_per_s": sum(r["rollout_tokens_per_s"] for r in timed) / len(timed),
        "step_tokens_per_s": sum(r["tokens_per_s"] for r in timed) / len(timed),
        "total_seconds": total,
    }
    print(json.dumps(result))
    return result


def _bench_eval(bundle, count: int) -> dict:
    import torch

    from simplear.eval.suite import make_suite
    from simplear.train.suite_eval import evaluate_bundle, spread

    bundle.model.eval()
    started = time.perf_counter()
    report = evaluate_bundle(bundle, spread(make_suite(seed=0), count), images_per_prompt=1, batch_size=32)
    seconds = time.perf_counter() - started
    result = {"device": str(next(bundle.model.parameters()).device), "threads": torch.get_num_threads(),
              "images": report["images"], "seconds": seconds, "images_per_s": report["images"] / seconds,
              "suite_553x4_minutes": 553 * 4 / (report["images"] / seconds) / 60}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
