"""Short SFT probe: how much do the training scenes' background and box grid matter?

    python scripts/probe_training_scenes.py OUT --background plain --grid 16 \
        --init-from runs/recipe/pretrain/bundle --tokenizer runs/recipe/tokenizer [key=value ...]

Renders `--images` ShapesWorld scenes at 128 px with the given background style and box grid
(plus 256 validation scenes), tokenises them with `--tokenizer`, trains the `shapes-sft` recipe
for `--steps` steps from `--init-from` (extra `key=value` overrides go to the trainer), then
judges the result on `--prompts` prompts spread over the 553-prompt suite (1 image each) at
each `--cfg` scale, and prints one `EVAL` JSON line per scale. Every stage resumes from OUT.
Used for the training-scene probes in docs/benchmarks.md.
"""

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--background", choices=("textured", "flat", "plain"), default="textured")
    p.add_argument("--grid", type=int, default=0)
    p.add_argument("--images", type=int, default=8000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--init-from", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--prompts", type=int, default=96)
    p.add_argument("--cfg", type=float, nargs="+", default=[3.0, 8.0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()

    from simplear.bundle import load_bundle
    from simplear.data.shapes import ShapesConfig
    from simplear.data.shapes_dataset import ShapesDatasetConfig, write_shapes_dataset
    from simplear.data.shards import TokenizeConfig, tokenize_dataset
    from simplear.eval.suite import make_suite
    from simplear.sampling.config import SamplingConfig
    from simplear.train.ar import train_ar
    from simplear.train.config import recipe
    from simplear.train.suite_eval import evaluate_bundle, spread
    from simplear.utils import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(args.threads)
    root, began = Path(args.out), time.perf_counter()
    shapes = ShapesConfig(background=args.background, grid=args.grid)
    for name, num, seed in (("high", args.images, 42), ("high-val", 256, 43)):
        folder = root / "data" / name
        if not (folder / "config.json").is_file():
            write_shapes_dataset(folder, ShapesDatasetConfig(num=num, resolution=128, seed=seed, shapes=shapes),
                                 overwrite=True)
        tokenize_dataset(TokenizeConfig(data=str(folder / "captions.jsonl"), tokenizer=args.tokenizer,
                                        out=str(root / "tokens" / name), resolution=128))
    print(f"data and tokens: {time.perf_counter() - began:.0f} s", flush=True)
    overrides = [f"data.shards={root / 'tokens/high'}", f"data.val_shards={root / 'tokens/high-val'}",
                 f"data.visual_tokenizer={args.tokenizer}", "data.resolution=128", f"model.init_from={args.init_from}",
                 f"max_steps={args.steps}", "eval.every=100", "progress=false", f"threads={args.threads}",
                 *args.overrides]
    run = root / "sft"
    train_ar(recipe("shapes-sft", overrides), run, resume=(run / "config.json").is_file())
    print(f"trained: {time.perf_counter() - began:.0f} s", flush=True)
    bundle = load_bundle(str(run / "bundle"))
    bundle.model.eval()
    prompts = spread(make_suite(seed=0), args.prompts)
    for scale in args.cfg:
        result = evaluate_bundle(bundle, prompts, images_per_prompt=1, seed=0, batch_size=32,
                                 sampling=SamplingConfig(cfg_scale=scale, temperature=1.0))
        print("EVAL", scale, json.dumps({k: result[k] for k in ("overall", "partial", "tags")}), flush=True)


if __name__ == "__main__":
    main()
