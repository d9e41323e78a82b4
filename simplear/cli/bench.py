"""`simplear bench sampling` (baseline vs reference vs fast engine vs Jacobi, same model and run) and
`simplear bench serving` (the HTTP load benchmark, `simplear/bench_serving.py`)."""

from __future__ import annotations


def register(top, groups) -> None:
    from simplear.sampling.config import ENGINE_KERNELS  # no torch at import

    p = groups["bench"].add_parser(
        "sampling",
        help="sampling speed: SimpleAR-style baseline, reference, fast engine, Jacobi",
        description="Measure image tokens/s, s/image, forward passes/image and peak memory of four samplers on "
        "one model. Default model: the embedded default bundle; --preset builds random weights of a size preset.",
    )
    p.add_argument("--model", default=None, help="model bundle folder (default: the embedded default model)")
    p.add_argument("--preset", default=None, help="random weights of a size preset: tiny, shapes, simplear-0.5b, simplear-1.5b")
    p.add_argument("--image-size", type=int, default=None, help="pixels per side (default: the model's)")
    p.add_argument("--batch-sizes", default="1,16", help="comma-separated batch sizes (default 1,16)")
    p.add_argument("--samplers", default="baseline,reference,engine,jacobi", help="comma-separated subset")
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="default: the model's own (a preset: 6.0, SimpleAR's)")
    p.add_argument("--temperature", type=float, default=None, help="default: the model's own (a preset: 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="default: the model's own (0 = off)")
    p.add_argument("--top-p", type=float, default=None, help="default: the model's own (1.0 = off)")
    p.add_argument("--window", type=int, default=16, help="Jacobi draft window")
    p.add_argument("--device", default=None, help="default: CUDA when present")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--compile", action="store_true", help="torch.compile the engine's step")
    p.add_argument("--no-cuda-graphs", action="store_true", help="eager engine steps on CUDA")
    p.add_argument("--kernels", default="auto", choices=ENGINE_KERNELS,
                   help="the engine's one-token decode step: fused Triton kernels (CUDA) or torch ops; "
                        "auto: Triton on CUDA with bf16 weights when triton is installed")
    p.add_argument("--max-slow-tokens", type=int, default=None,
                   help="time baseline/reference on this many tokens and extrapolate (for large images)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per row; the fastest counts")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_run)

    from simplear.bench_serving import add_arguments  # argparse only: no torch at import

    s = groups["bench"].add_parser(
        "serving", help="HTTP load: images/s and p50/p95 latency at 1/8/32 concurrent clients",
        description="Closed-loop clients against the real server on 127.0.0.1 (bounded in count and time).",
    )
    add_arguments(s)
    s.set_defaults(func=_run_serving)


def _run_serving(args) -> int:
    from simplear.bench_serving import run

    return run(args)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from err


def _run(args) -> int:
    import json
    import sys

    import torch

    from simplear.sampling.bench import BenchConfig, format_table, run_sampling_benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    config = BenchConfig(
        model=args.model, preset=args.preset, image_size=args.image_size, batch_sizes=_ints(args.batch_sizes),
        samplers=tuple(s.strip() for s in args.samplers.split(",") if s.strip()), cfg_scale=args.cfg_scale,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, window=args.window, device=args.device,
        dtype=args.dtype, compile=args.compile, cuda_graphs=False if args.no_cuda_graphs else None, kernels=args.kernels,
        max_slow_tokens=args.max_slow_tokens, seed=args.seed, repeats=args.repeats,
    )
    log = None if args.json else (lambda row: print(
        f"  {row['sampler']:<9} batch {row['batch']:>3}: {row['seconds_per_image']:.3f} s/image", file=sys.stderr))
    result = run_sampling_benchmark(config, log=log)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
