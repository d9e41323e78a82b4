"""Where a fast-engine decoding step spends its time on this machine (one thread).

    python scripts/profile_engine_step.py [--preset shapes] [--text 512] [--codebook 2560] [--compile]

Builds random weights of a size preset, then prints ms per one-token step (batch 1 with CFG, so
2 rows) for fp32 / bf16 / fp16 weights (with --compile also the compiled fp32 step) and the
profiler's top ops for fp32. Speed does not depend
on the weights' values. Used for the engine analysis in docs/benchmarks.md.
"""

import argparse
import time

import torch

from simplear.model import build_model
from simplear.sampling.engine import FastEngine


@torch.inference_mode()
def step_ms(engine: FastEngine, steps: int, kv_len: int = 300) -> float:
    ids = torch.tensor([[engine.visual_offset + 1]] * 2)
    slot, start = torch.full((2, 1), kv_len // 2), torch.tensor([0, 18])
    engine.allocate(2, kv_len)
    for _ in range(10):
        engine.step(ids, slot, start, kv_len)
    began = time.perf_counter()
    for _ in range(steps):
        engine.step(ids, slot, start, kv_len)
    return (time.perf_counter() - began) * 1000 / steps


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="shapes")
    parser.add_argument("--text", type=int, default=512, help="text ids (the default model's)")
    parser.add_argument("--codebook", type=int, default=2560, help="visual codes (the default model's)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--compile", action="store_true",
                        help="also time the fp32 step compiled (FastEngine(compile=True); compiles first)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = build_model(args.preset, args.text + args.codebook, seed=0).eval()
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        engine = FastEngine(model.to(dtype), args.text, args.codebook)
        print(f"{str(dtype):15s} {step_ms(engine, args.steps):.2f} ms/step")
    if args.compile:
        compiled = FastEngine(model.to(torch.float32), args.text, args.codebook, compile=True)
        print(f"{'float32 compiled':15s} {step_ms(compiled, args.steps):.2f} ms/step")
    engine = FastEngine(model.to(torch.float32), args.text, args.codebook)
    weights = sum(t.numel() * t.element_size() for t in [engine.weights.top.head] + [w for layer in engine.weights.layers
                  for w in (layer.wqkv, layer.wo, layer.wgu, layer.wd)])
    print(f"weights read per step: {weights / 2**20:.1f} MiB")
    with torch.profiler.profile() as prof, torch.inference_mode():
        step_ms(engine, 20)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
