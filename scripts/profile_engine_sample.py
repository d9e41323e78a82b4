"""Where one image's sampling time goes with the compiled fast engine (the embedded default model).

    python scripts/profile_engine_sample.py [--threads 2] [--eager] [--dtype bfloat16]

Loads the embedded default model on CPU (fp32 unless --dtype), samples one 128-px image (batch 1, CFG 6.0,
temperature 1.0) once to compile, times three more, and prints the profiler's top entries for a
fourth: the compiled graph, dynamo's guard check, and the ops of the sampling step around it.
Used for the engine analysis in docs/benchmarks.md.
"""

import argparse
import time

import torch

from simplear import Pipeline


def default_model_sampler(dtype: torch.dtype = torch.float32, compile: bool = True):
    """The embedded default model on CPU and a function sampling its one timed image (seed 0)."""
    pipe = Pipeline.from_pretrained(device="cpu", dtype=dtype, compile=compile)
    config = pipe.sampling_config(cfg_scale=6.0, temperature=1.0)
    cond = [pipe.vocab.encode_prompt("a photo of two red circles")]
    uncond = [pipe.vocab.encode_negative(None)]
    rows, cols = pipe.grid_for(None)

    def sample():
        generator = [torch.Generator().manual_seed(0)]
        return pipe.engine.sample(cond, uncond, num_tokens=rows * cols, config=config, generator=generator)

    return sample, rows * cols


def alternate(doc: str, variants: dict) -> None:
    """The A/B scripts' runner: `--threads` / `--rounds` from the command line, the compiled default
    model, one warm-up image per variant (a function that switches the variant on), then
    alternating timed rounds; every image must equal the first one's
    codes. Prints seconds per image of each round and the fastest of each variant."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sample, _ = default_model_sampler(torch.float32, compile=True)
    first = None
    for switch_on in variants.values():  # compiles what each variant needs
        switch_on()
        codes = sample().codes
        first = codes if first is None else first
        assert torch.equal(codes, first)
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, switch_on in variants.items():
            switch_on()
            began = time.perf_counter()
            out = sample()
            times[name].append(time.perf_counter() - began)
            assert torch.equal(out.codes, first)
    for name, values in times.items():
        print(f"{name:>22}: " + " ".join(f"{v:.3f}" for v in values) + f"  fastest {min(values):.3f} s/image")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eager", action="store_true", help="profile the eager engine instead")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="weights and activations (bfloat16: the bf16 model, other numerics than fp32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sample, tokens = default_model_sampler(getattr(torch, args.dtype), compile=not args.eager)
    sample()  # compiles (tens of seconds with GEMM autotuning)
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        sample()
        best = min(best, time.perf_counter() - began)
    print(f"{best:.3f} s/image ({best * 1000 / tokens:.2f} ms/token), {args.threads} thread(s)")
    with torch.profiler.profile() as prof:
        sample()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
