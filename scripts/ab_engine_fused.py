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

from profile_engine_sample import alternate  # scripts/ is on sys.path when run as a script

from simplear.sampling.engine import FastEngine

if __name__ == "__main__":
    fused = FastEngine._decode_fused

    def use(decode):
        def switch_on():
            FastEngine._decode_fused = decode
        return switch_on

    alternate(__doc__, {"sampling in the graph": use(fused), "sampling between calls": use(FastEngine._decode)})
    FastEngine._decode_fused = fused
