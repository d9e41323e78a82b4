"""A/B of Jacobi's new-draft start: uniform over the codebook against the code one row above.

    python scripts/ab_jacobi_drafts.py [--threads 2] [--seeds 2] [--window 16]

Loads the embedded default model as fp32 on CPU (eager engine) and samples batches of 16 images
of the sampling benchmark's five prompts (cycled), once per seed, with `jacobi_sample` given no
grid width (uniform new drafts) and the model's grid width (row above), at the model's own
sampling settings and at SimpleAR's CFG 6.0 / temperature 1.0. Prints the mean image tokens per
forward pass per image of each. Used for the Jacobi draft figures in docs/benchmarks.md.
"""

import argparse
import time

import torch

from simplear.bundle import load_bundle
from simplear.sampling.config import SamplingConfig
from simplear.sampling.engine import FastEngine
from simplear.sampling.jacobi import jacobi_sample
from simplear.utils import format_down

PROMPTS = ["a photo of two red circles", "a blue square left of a green star", "three yellow hearts",
           "a photo of a purple triangle", "a photo of four orange crosses"]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--window", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_bundle(None, device="cpu", load_visual=False)
    vocab, (rows, width) = bundle.vocab, bundle.config.grid
    cond = [vocab.encode_prompt(PROMPTS[i % len(PROMPTS)]) for i in range(16)]
    engine = FastEngine(bundle.model, vocab.visual_offset, vocab.codebook_size)
    own = SamplingConfig.from_dict(bundle.config.sampling.to_dict())
    for name, config in (("model's own", own), ("SimpleAR's", SamplingConfig(cfg_scale=6.0, temperature=1.0))):
        for start, grid_width in (("uniform", None), ("row above", width)):
            per_image, started = [], time.perf_counter()
            for seed in range(args.seeds):
                out = jacobi_sample(bundle.model, cond, vocab.encode_unconditional(),
                                    visual_offset=vocab.visual_offset, codebook_size=vocab.codebook_size,
                                    num_tokens=rows * width, generator=torch.Generator().manual_seed(seed),
                                    config=config, window=args.window, pad_id=vocab.pad_id, engine=engine,
                                    grid_width=grid_width)
                per_image += out.stats["tokens_per_forward_per_image"]
            print(f"{name} settings (CFG {config.cfg_scale}, T {config.temperature}), {start} drafts: "
                  f"{format_down(sum(per_image) / len(per_image), 3)} tokens per pass per image "
                  f"({len(per_image)} images, {time.perf_counter() - started:.0f} s)", flush=True)
