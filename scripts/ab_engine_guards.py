"""A/B in one process: the compiled engine with and without dynamo's per-call guard check.

    python scripts/ab_engine_guards.py [--threads 2] [--rounds 4]

Loads the embedded default model as fp32 on CPU with `compile=True`, samples one 128-px image
(batch 1, CFG 6.0, temperature 1.0) to compile, then alternates rounds of the engine as it is
(known step shapes skip the full guard check) and with the check forced back on (the stance
switch replaced by a no-op), printing seconds per image of each round and the fastest of each.
Both must draw the same codes (asserted). Used for the engine figures in docs/benchmarks.md.
"""

import argparse
import contextlib
import time

import torch
from profile_engine_sample import default_model_sampler  # scripts/ is on sys.path when run as a script

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sample, _ = default_model_sampler(torch.float32, compile=True)
    first = sample()  # compiles
    skip_stance = torch.compiler.set_stance
    times = {"full guard check": [], "known shapes skip it": []}
    for _ in range(args.rounds):
        for name in times:
            torch.compiler.set_stance = skip_stance if name.startswith("known") else (
                lambda *a, **k: contextlib.nullcontext())
            began = time.perf_counter()
            out = sample()
            times[name].append(time.perf_counter() - began)
            assert torch.equal(out.codes, first.codes)
    torch.compiler.set_stance = skip_stance
    for name, values in times.items():
        print(f"{name:>22}: " + " ".join(f"{v:.3f}" for v in values) + f"  fastest {min(values):.3f} s/image")
