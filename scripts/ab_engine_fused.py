"""A/B in one process: the compiled CPU engine sampling inside its graph vs between graph calls.

    python scripts/ab_engine_fused.py [--threads 2] [--rounds 4]

Loads the embedded default model as fp32 on CPU with `compile=True`, samples one 128-px image
(batch 1, CFG 6.0, temperature 1.0) once per variant to compile, then alternates rounds of the
engine as it is (CFG, temperature and the draw inside the compiled step) and with each step's
sampling done by eager ops between compiled steps (`FastEngine._decode_fused` swapped for
`FastEngine._decode`), printing seconds per image of each round and the fastest of each. Both
use the same random numbers, so they must draw the same codes (asserted). Used for the engine
figures in docs/benchmarks.md.
"""

import argparse
import time

import torch
from profile_engine_sample import default_model_sampler  # scripts/ is on sys.path when run as a script

from simplear.sampling.engine import FastEngine

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sample, _ = default_model_sampler(torch.float32, compile=True)
    fused = FastEngine._decode_fused
    variants = {"sampling in the graph": fused, "sampling between calls": FastEngine._decode}
    first = None
    for decode in variants.values():  # compile both
        FastEngine._decode_fused = decode
        codes = sample().codes
        first = codes if first is None else first
        assert torch.equal(codes, first)
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, decode in variants.items():
            FastEngine._decode_fused = decode
            began = time.perf_counter()
            out = sample()
            times[name].append(time.perf_counter() - began)
            assert torch.equal(out.codes, first)
    FastEngine._decode_fused = fused
    for name, values in times.items():
        print(f"{name:>22}: " + " ".join(f"{v:.3f}" for v in values) + f"  fastest {min(values):.3f} s/image")
