"""A/B in one process: the compiled engine with and without dynamo's per-call guard check.

    python scripts/ab_engine_guards.py [--threads 2] [--rounds 4]

Loads the embedded default model as fp32 on CPU with `compile=True`, samples one 128-px image
(batch 1, CFG 6.0, temperature 1.0) to compile, then alternates rounds of the engine as it is
(known step shapes skip the full guard check) and with the check forced back on (the stance
switch replaced by a no-op), printing seconds per image of each round and the fastest of each.
Both must draw the same codes (asserted). Used for the engine figures in docs/benchmarks.md.
"""

import contextlib

import torch
from profile_engine_sample import alternate  # scripts/ is on sys.path when run as a script

if __name__ == "__main__":
    skip_stance = torch.compiler.set_stance

    def use(stance):
        def switch_on():
            torch.compiler.set_stance = stance
        return switch_on

    alternate(__doc__, {"full guard check": use(lambda *a, **k: contextlib.nullcontext()),
                        "known shapes skip it": use(skip_stance)})
    torch.compiler.set_stance = skip_stance
