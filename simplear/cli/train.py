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

    q = top.add_parser("plot", help="draw a run's loss / score curves to a PNG")
    q.add_argument("run", help="run folder (with log.jsonl)")
    q.add_argument("--out", default=None, help="PNG path (default RUN/curves.png)")
    q.set_defaults(func=_plot)
