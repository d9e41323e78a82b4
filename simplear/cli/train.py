"""`simplear train ar` (pretraining / SFT by named recipe) and `simplear plot RUN`.

Thin: parse arguments, build a TrainConfig from a recipe plus `key=value` overrides, make one
library call. Under `torchrun --nproc_per_node=N -m simplear train ar ...` the same verb trains
with DDP (or FSDP with `parallel=fsdp`).
"""

from __future__ import annotations

import argparse


def _train_ar(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace
    from pathlib import Path

    from simplear.train.ar import train_ar
    from simplear.train.config import TrainConfig, apply_overrides, recipe

    overrides = list(args.overrides)
    if args.resume:
        # The run's own resolved config is the truth; overrides may change logging and stopping.
        saved = Path(args.out or "") / "config.json"
        if not args.out or not saved.is_file():
            raise FileNotFoundError(f"--resume needs --out RUN with a config.json (looked for {saved})")
        config = apply_overrides(TrainConfig.from_dict(json.loads(saved.read_text())), overrides)
    else:
        config = recipe(args.recipe, overrides)
        if args.init_from:
            config = replace(config, model=replace(config.model, init_from=args.init_from))
    out = args.out or f"runs/{config.recipe}"
    run = train_ar(config, out, resume=args.resume)
    print(run / "bundle" if (run / "bundle").is_dir() else run)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from simplear.train.plot import plot_run

    print(plot_run(args.run, args.out))
    return 0


def _bench_train(args: argparse.Namespace) -> int:
    import json

    from simplear.train.throughput import ThroughputConfig, measure_throughput

    config = ThroughputConfig(
        preset=args.preset, text_vocab=args.text_vocab, codebook_size=args.codebook_size,
        image_tokens=args.image_tokens, prompt_tokens=args.prompt_tokens, micro_batch_size=args.batch_size,
        steps=args.steps, warmup=args.warmup, device=args.device, precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing, threads=args.threads,
        peak_tflops=args.peak_tflops, compile=args.compile,
    )
    result = measure_throughput(config)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        mfu = f", MFU {result['mfu']:.1%}" if "mfu" in result else ""
        # Speeds are floored, never rounded up.
        print(f"{result['preset']} on {result['device']}: {int(result['tokens_per_s'])} tokens/s "
              f"({int(result['image_tokens_per_s'])} image tokens/s), {result['step_s'] * 1000:.0f} ms/step "
              f"at batch {result['micro_batch_size']} x {result['sequence']} tokens, "
              f"{result['achieved_tflops']:.3f} TFLOP/s{mfu}")
    return 0


def register(top, groups) -> None:
    from simplear.train.config import RECIPES

    p = groups["train"].add_parser(
        "ar", help="pretrain / SFT the AR model by recipe",
        description="Train the AR model (next-token prediction on image tokens). Overrides are "
                    "key=value, e.g. optim.lr=3e-4 max_steps=200 data.shards=DIR1,DIR2.",
    )
    p.add_argument("--recipe", default="shapes-pretrain", choices=sorted(RECIPES), help="named recipe")
    p.add_argument("--init-from", dest="init_from", default=None,
                   help="a run folder, a bundle, or a Qwen2.5 folder / hub id to start from")
    p.add_argument("--out", default=None, help="run folder (default runs/RECIPE)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=_train_ar)

    b = groups["bench"].add_parser(
        "train", help="AR training throughput (tokens/s, MFU) of a size preset",
        description="Time the trainer's step (visual-rows loss, backward, AdamW) on random sequences. "
                    "SimpleAR-0.5B at 512 px: --preset simplear-0.5b --text-vocab 151672 "
                    "--codebook-size 64000 --image-tokens 1024 --prompt-tokens 64.",
    )
    b.add_argument("--preset", default="shapes")
    b.add_argument("--text-vocab", type=int, default=512)
    b.add_argument("--codebook-size", type=int, default=1000)
    b.add_argument("--image-tokens", type=int, default=64)
    b.add_argument("--prompt-tokens", type=int, default=20)
    b.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--device", default=None)
    b.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    b.add_argument("--gradient-checkpointing", action="store_true")
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s for MFU where not known")
    b.add_argument("--compile", action="store_true", help="torch.compile the loss module")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench_train)

    q = top.add_parser("plot", help="draw a run's loss / score curves to a PNG")
    q.add_argument("run", help="run folder (with log.jsonl)")
    q.add_argument("--out", default=None, help="PNG path (default RUN/curves.png)")
    q.set_defaults(func=_plot)
