"""A/B in one process: the FSQ tokenizer's encode/decode in NCHW against channels-last on the CPU.

    python scripts/ab_tokenizer_layout.py [--tokenizer DIR] [--threads 2] [--rounds 3] [--batch 32]

Loads a visual tokenizer (default: the embedded default model's), renders the first `--batch`
scenes of the evaluation suite at 64 and 128 px, and alternates rounds of `encode` and `decode`
with the convolution weights and inputs in each layout (`FSQAutoencoder._use_layout` picks
channels-last for encode/decode on a CPU; the NCHW rounds force the training layout). Prints
milliseconds per image of every round and the fastest round of each, and asserts that both layouts
give the same codes and images within 1e-4. Used for the tokenizer figures in docs/benchmarks.md.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from simplear.data.shapes import render_array, scene_from_metadata
from simplear.eval.suite import make_suite
from simplear.visual_tokenizers import load_visual_tokenizer


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[1] / "simplear" / "assets" / "default" / "visual_tokenizer"
    parser.add_argument("--tokenizer", default=str(default))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = load_visual_tokenizer(args.tokenizer, device="cpu")
    suite = make_suite(0)[: args.batch]
    rng = np.random.default_rng(0)
    layouts = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}

    def run(layout, images, codes):
        tok.set_conv_layout(layout)  # what encode/decode do, with the layout fixed here
        enc = lambda: tok.quantizer(tok.encoder(images.contiguous(memory_format=layout)))[1]  # noqa: E731
        z = tok.quantizer.quantized_from_codes(codes).contiguous(memory_format=layout)
        dec = lambda: tok.decoder(z).clamp(-1.0, 1.0)  # noqa: E731
        return timed(enc), timed(dec)

    print(f"tokenizer {args.tokenizer}, {args.threads} threads, batch {args.batch}, ms per image")
    for resolution in (64, 128):
        arrays = np.stack([render_array(scene_from_metadata(m, rng), resolution) for m in suite])
        images = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch.inference_mode():
            codes = tok.encode(images)
            best: dict[tuple[str, str], float] = {}
            outputs = {}
            for rnd in range(args.rounds + 1):  # round 0 warms both up and is not counted
                for name, layout in layouts.items():
                    (enc_codes, enc_s), (dec_images, dec_s) = run(layout, images, codes)
                    outputs[name] = (enc_codes, dec_images)
                    if rnd == 0:
                        continue
                    for op, seconds in (("encode", enc_s), ("decode", dec_s)):
                        ms = seconds / len(images) * 1000
                        best[(op, name)] = min(best.get((op, name), float("inf")), ms)
                        print(f"{resolution} px round {rnd} {op:6s} {name:13s} {ms:7.2f}")
            (c0, i0), (c1, i1) = outputs.values()
            assert torch.equal(c0, c1), "the layouts gave different codes"
            assert (i0 - i1).abs().max() < 1e-4, "the layouts gave different images"
        for op in ("encode", "decode"):
            a, b = best[(op, "NCHW")], best[(op, "channels-last")]
            print(f"{resolution} px {op}: fastest NCHW {a:.2f} ms, channels-last {b:.2f} ms, ratio {a / b:.2f}x")


if __name__ == "__main__":
    main()
