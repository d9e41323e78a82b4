"""A/B in one process: a decoder-only (`--freeze-encoder`) tokenizer training step in float32,
under whole-model bf16 autocast, and with the frozen encoder in float32 and the decoder in bf16.

    python scripts/bench_decoder_step.py [--tokenizer DIR] [--decoder-channels 64,128,256,256]
        [--decoder-res-blocks 0,1,1,2] [--resolution 64] [--batch 8] [--threads 2] [--steps 10] [--rounds 2]

Builds TOKENIZER's encoder (default: the embedded default model's) with a fresh decoder of the given
shape, as `simplear train tokenizer --init-from TOK --freeze-encoder --decoder-channels ...` does,
and times forward + L1 loss + backward + AdamW on one random batch: `--rounds` rounds of the three
modes in turn, each 3 warm-up steps then `--steps` timed ones. Prints seconds per step of every
round, the fastest of each mode, and how many of the batch's codes a bf16 encoder changes (what
the frozen-encoder mode avoids). Used for the decoder-step figures in docs/benchmarks.md.
"""

import argparse
import contextlib
import dataclasses
import time
from pathlib import Path

import torch

from simplear.visual_tokenizers import FSQAutoencoder, load_visual_tokenizer


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[1] / "simplear" / "assets" / "default" / "visual_tokenizer"
    parser.add_argument("--tokenizer", default=str(default))
    parser.add_argument("--decoder-channels", type=ints, default=(64, 128, 256, 256))
    parser.add_argument("--decoder-res-blocks", type=ints, default=None)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = load_visual_tokenizer(args.tokenizer)
    config = dataclasses.replace(base.config, decoder_channels=args.decoder_channels,
                                 decoder_res_blocks=args.decoder_res_blocks)
    model = FSQAutoencoder(config)
    model.encoder.load_state_dict(base.encoder.state_dict())
    model.encoder.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.rand(args.batch, 3, args.resolution, args.resolution) * 2 - 1
    bf16 = lambda: torch.autocast(device_type="cpu", dtype=torch.bfloat16)  # noqa: E731
    modes = {"fp32": (contextlib.nullcontext, False), "bf16 whole model": (bf16, False),
             "bf16 decoder, fp32 encoder": (bf16, True)}

    def step(context, frozen: bool) -> None:
        with context():
            recon, _ = model(x, frozen_encoder=frozen)
        loss = (recon.float() - x).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    print(f"decoder {config.dec_channels} / {config.dec_res_blocks}, {model.num_parameters() / 1e6:.2f} M parameters, "
          f"batch {args.batch} x {args.resolution} px, {args.threads} threads, seconds per step")
    best: dict[str, float] = {}
    for rnd in range(1, args.rounds + 1):
        for name, (context, frozen) in modes.items():
            for _ in range(3):
                step(context, frozen)
            started = time.perf_counter()
            for _ in range(args.steps):
                step(context, frozen)
            seconds = (time.perf_counter() - started) / args.steps
            best[name] = min(best.get(name, float("inf")), seconds)
            print(f"round {rnd} {name:27s} {seconds:.3f}")
    for name in modes:
        print(f"fastest {name:27s} {best[name]:.3f} s  ({best['fp32'] / best[name]:.2f}x fp32)")
    with torch.no_grad():
        codes = model.encode(x)
        with bf16():
            bf16_codes = model(x)[1]
    moved = int((codes != bf16_codes).sum())
    print(f"codes a bf16 encoder changes in this batch: {moved} of {codes.numel()}")


if __name__ == "__main__":
    main()
