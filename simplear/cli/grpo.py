"""`simplear train grpo` (RL on a trained bundle) and `simplear recipe shapes` (all three stages).

Thin: parse arguments, build a typed config, one library call. Under
`torchrun --nproc_per_node=N -m simplear train grpo ...` the same verb trains with DDP.
"""

from __future__ import annotations

import argparse


def _train_grpo(args: argparse.Namespace) -> int:
    import json
    from dataclasses import fields

    from simplear.train.grpo import GRPOConfig, train_grpo

    given = {f.name: getattr(args, f.name) for f in fields(GRPOConfig) if getattr(args, f.name, None) is not None}
    config = GRPOConfig(**given)
    summary = train_grpo(config)
    if summary:
        print(json.dumps(summary))
    return 0


def _set_fields(flag: str, config, owned: tuple[str, ...], items: list[str]) -> dict:
    """`KEY=VALUE` items applied to a stage's config dataclass, as {key: typed value}; fields the
    recipe sets itself (`owned`), unknown keys, values of the wrong type and invalid combinations
    (the config's own checks) fail here, before any stage runs."""
    from simplear.train.config import apply_overrides

    keys = [item.split("=", 1)[0].strip() for item in items]
    taken = [k for k in keys if k in owned]
    if taken:
        raise ValueError(f"{flag} {taken[0]}: the recipe sets {', '.join(owned)} itself (use --out, --device or --seed)")
    updated = apply_overrides(config, items)
    return {k: getattr(updated, k) for k in keys}


def _grpo_set(fields: dict, items: list[str]) -> dict:
    """The recipe's GRPO fields with `KEY=VALUE` overrides applied."""
    from simplear.train.grpo import GRPOConfig
    from simplear.train.recipe import GRPO_FIELDS_SET_BY_RECIPE

    return {**fields, **_set_fields("--grpo-set", GRPOConfig(**fields), GRPO_FIELDS_SET_BY_RECIPE, items)}


def _tokenizer_set(config, items: list[str]) -> dict:
    """The recipe's tokenizer overrides with `KEY=VALUE` items applied, checked against the tokenizer
    config the stage would build (so a downsampling that does not divide the recipe's resolutions
    fails too)."""
    from simplear.train.recipe import TOKENIZER_FIELDS_SET_BY_RECIPE
    from simplear.train.tokenizer import recipe_config

    base = recipe_config(config.tokenizer_recipe, out=config.out,
                         resolutions=(config.low_resolution, config.high_resolution), **config.tokenizer_overrides)
    return {**config.tokenizer_overrides,
            **_set_fields("--tokenizer-set", base, TOKENIZER_FIELDS_SET_BY_RECIPE, items)}


def tag_weights(text: str) -> dict:
    """`TAG=W[,TAG=W...]` as the full {tag: weight} mix: tags not named keep GenEval's weight."""
    from simplear.data.shapes import GENEVAL_TAG_WEIGHTS, parse_tag_weights

    try:
        return parse_tag_weights(text, dict(GENEVAL_TAG_WEIGHTS))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _recipe(args: argparse.Namespace) -> int:
    import dataclasses

    from simplear.train.recipe import RecipeConfig, grpo_defaults, run_recipe, smoke_config

    config = smoke_config(args.out, args.device) if args.smoke else RecipeConfig(out=args.out, device=args.device)
    changes = {k: v for k, v in (("seed", args.seed), ("until", args.until), ("eval_num_prompts", args.eval_prompts),
                                 ("eval_images_per_prompt", args.images_per_prompt),
                                 ("eval_batch_size", args.eval_batch_size),
                                 ("data_background", args.data_background), ("data_grid", args.data_grid),
                                 ("data_caption_order", args.data_caption_order),
                                 ("tokenizer_from", args.tokenizer), ("pretrain_images", args.pretrain_images),
                                 ("sft_images", args.sft_images), ("sft_tag_weights", args.sft_tag_weights),
                                 ("snap_background", args.snap_background))
               if v is not None}
    if args.tokenizer_set:
        if args.tokenizer:
            raise ValueError("--tokenizer-set configures the tokenizer the recipe trains; with --tokenizer it "
                             "trains none (set those options when training that tokenizer)")
        changes["tokenizer_overrides"] = _tokenizer_set(config, args.tokenizer_set)
    if args.grpo_steps is not None:
        changes["grpo_overrides"] = {**(config.grpo_overrides or grpo_defaults()), "steps": args.grpo_steps}
    if args.grpo_set:
        changes["grpo_overrides"] = _grpo_set(changes.get("grpo_overrides", config.grpo_overrides or grpo_defaults()),
                                              args.grpo_set)
    for stage in ("pretrain", "sft"):
        key = f"{stage}_overrides"
        steps = getattr(args, f"{stage}_steps")
        if steps is not None:
            if steps < 1:
                raise ValueError(f"--{stage}-steps must be >= 1, got {steps}")
            changes[key] = (*getattr(config, key), f"max_steps={steps}")
        extra = getattr(args, f"{stage}_set") or []
        if extra:
            from simplear.train.config import recipe

            recipe(f"shapes-{stage}", list(extra))  # a bad key or value fails here, not an hour in
            changes[key] = (*changes.get(key, getattr(config, key)), *extra)
    flags = [("--smoke", args.smoke or None), ("--device", args.device), ("--seed", args.seed),
             ("--eval-prompts", args.eval_prompts), ("--images-per-prompt", args.images_per_prompt),
             ("--eval-batch-size", args.eval_batch_size),
             ("--pretrain-steps", args.pretrain_steps), ("--sft-steps", args.sft_steps),
             ("--grpo-steps", args.grpo_steps), ("--data-background", args.data_background),
             ("--data-grid", args.data_grid), ("--data-caption-order", args.data_caption_order),
             ("--tokenizer", args.tokenizer), ("--pretrain-images", args.pretrain_images),
             ("--sft-images", args.sft_images), ("--sft-tag-weights", args.sft_tag_weights
                                                 and ",".join(f"{t}={w:g}" for t, w in args.sft_tag_weights.items())),
             ("--snap-background", args.snap_background or None),
             ("--no-snap-background", (args.snap_background is False) or None)]
    flags += [(f"--{stage}-set", v) for stage in ("tokenizer", "pretrain", "sft", "grpo")
              for v in getattr(args, f"{stage}_set") or []]
    command = " ".join([f"simplear recipe {args.name} --out {args.out}"]
                       + [flag if value is True else f"{flag} {value}" for flag, value in flags if value is not None])
    run_recipe(dataclasses.replace(config, **changes), command=command)
    return 0


def register(top, groups) -> None:
    from simplear.data.shapes import BACKGROUND_STYLES, CAPTION_ORDERS
    from simplear.train.recipe import RecipeConfig

    p = groups["train"].add_parser(
        "grpo", help="GRPO (RL) on a trained bundle with the judge or a CLIP reward",
        description="Group relative policy optimisation: G images per prompt from the policy (with the "
                    "CFG scale and temperature it is evaluated with), rewards normalised within each group, "
                    "clipped surrogate + KL to the initial model. Ends with OUT/bundle.",
    )
    p.add_argument("--init-from", dest="init_from", required=True, help="bundle folder to start from (the SFT model)")
    p.add_argument("--out", default="runs/grpo", help="run folder (default runs/grpo)")
    p.add_argument("--reward", default=None,
                   help="reward spec: shapes | shapes:strict | shapes:exact | shapes:exact-partial | clip:PATH | 0.8*shapes+0.2*clip:PATH (default shapes)")
    p.add_argument("--prompts", default=None, help="JSONL of GenEval metadata lines (default: ShapesWorld prompts)")
    p.add_argument("--tag-weights", dest="tag_weights", default=None, metavar="TAG=W,...",
                   help="the ShapesWorld training prompts' mix of GenEval's six tags, e.g. "
                        "single_object=0.1,colors=0.4 (tags not named keep weight 1; default: all equal); "
                        "not with --prompts")
    p.add_argument("--eval-prompts", dest="eval_prompts", default=None,
                   help="JSONL for periodic evaluation (default: the ShapesWorld suite)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--prompts-per-step", dest="prompts_per_step", type=int, default=None)
    p.add_argument("--group-size", dest="group_size", type=int, default=None, help="G images per prompt (default 8)")
    p.add_argument("--passes", type=int, default=None, help="optimisation passes per rollout batch")
    p.add_argument("--minibatch-size", dest="minibatch_size", type=int, default=None)
    p.add_argument("--micro-batch-size", dest="micro_batch_size", type=int, default=None)
    p.add_argument("--rollout-batch-size", dest="rollout_batch_size", type=int, default=None,
                   help="images per sampler call in the rollouts (default: --micro-batch-size)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lr-schedule", dest="lr_schedule", choices=("constant", "cosine"), default=None)
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int, default=None,
                   help="steps of linear lr warm-up (default 0); Adam's first update moves every weight by lr")
    p.add_argument("--beta", type=float, default=None, help="KL weight (0 allowed: no reference model)")
    p.add_argument("--clip-eps", dest="clip_eps", type=float, default=None)
    p.add_argument("--cfg-scale", dest="cfg_scale", type=float, default=None,
                   help="CFG scale of rollouts, loss and evaluation (default: the bundle's)")
    p.add_argument("--temperature", type=float, default=None, help="default: the bundle's")
    p.add_argument("--sampler", choices=("engine", "reference"), default=None)
    p.add_argument("--eval-every", dest="eval_every", type=int, default=None)
    p.add_argument("--eval-num-prompts", dest="eval_num_prompts", type=int, default=None)
    p.add_argument("--eval-images-per-prompt", dest="eval_images_per_prompt", type=int, default=None)
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=None)
    p.add_argument("--keep-last", dest="keep_last", type=int, default=None)
    p.add_argument("--bundle-dtype", dest="bundle_dtype", choices=("float32", "bfloat16", "float16"), default=None)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="teacher-forced forwards (log-probs and loss): fp32 (default), bf16 autocast, or auto "
                        "(bf16 on CUDA and on CPUs with native bf16 matmuls); sampling stays float32")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--resume", action="store_true", default=None, help="continue the run in --out")
    p.set_defaults(func=_train_grpo)

    r = top.add_parser(
        "recipe", help="run a whole training recipe (tokenizer -> pretrain -> SFT -> GRPO)",
        description="ShapesWorld's three-stage recipe with an evaluation after each stage; re-running the "
                    "same command continues where it stopped. Writes OUT/stages.md and OUT/stages.json.",
    )
    r.add_argument("name", choices=("shapes",), help="recipe name")
    r.add_argument("--out", required=True, help="recipe folder")
    r.add_argument("--smoke", action="store_true", help="a tiny configuration that runs in about a minute")
    r.add_argument("--device", default=None, help="default: CUDA when present, else CPU")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--until", default=None, choices=("data", "tokenizer", "tokens", "pretrain", "sft", "grpo"),
                   help="stop after this stage")
    r.add_argument("--eval-prompts", dest="eval_prompts", type=int, default=None,
                   help="suite prompts per evaluation (default all 553)")
    r.add_argument("--images-per-prompt", dest="images_per_prompt", type=int, default=None)
    r.add_argument("--eval-batch-size", dest="eval_batch_size", type=int, default=None,
                   help="images per sampler call in the evaluations (default 128; lower it on a small GPU)")
    r.add_argument("--pretrain-steps", dest="pretrain_steps", type=int, default=None,
                   help="optimiser steps of the pretraining stage (default: the shapes-pretrain recipe's)")
    r.add_argument("--sft-steps", dest="sft_steps", type=int, default=None,
                   help="optimiser steps of the SFT stage (default: the shapes-sft recipe's)")
    r.add_argument("--grpo-steps", dest="grpo_steps", type=int, default=None)
    r.add_argument("--pretrain-images", dest="pretrain_images", type=int, default=None,
                   help=f"training scenes rendered and tokenised for pretraining (default {RecipeConfig.pretrain_images:,})")
    r.add_argument("--sft-images", dest="sft_images", type=int, default=None,
                   help=f"training scenes rendered and tokenised for SFT (default {RecipeConfig.sft_images:,})")
    r.add_argument("--sft-tag-weights", dest="sft_tag_weights", type=tag_weights, default=None, metavar="TAG=W,...",
                   help="the SFT scenes' mix of GenEval tags, e.g. single_object=20,colors=50 (tags not named keep "
                        "GenEval's proportions 80/99/80/94/100/100, which the other scene sets always use)")
    r.add_argument("--tokenizer-set", dest="tokenizer_set", action="append", metavar="KEY=VALUE",
                   help="override a field of the tokenizer stage's `shapes` tokenizer config, as "
                        "train_config.json names it (e.g. precision=bf16, steps=6000); repeatable")
    r.add_argument("--pretrain-set", dest="pretrain_set", action="append", metavar="KEY=VALUE",
                   help="override a field of the pretraining stage's shapes-pretrain config, as `simplear "
                        "train ar` takes it (e.g. batch_size=32); repeatable, applied after --pretrain-steps")
    r.add_argument("--sft-set", dest="sft_set", action="append", metavar="KEY=VALUE",
                   help="the same for the SFT stage's shapes-sft config (e.g. optim.lr=1e-3)")
    r.add_argument("--grpo-set", dest="grpo_set", action="append", metavar="KEY=VALUE",
                   help="override a field of the GRPO stage's settings, as `simplear train grpo` names them "
                        "with underscores (e.g. passes=1, beta=0.02); repeatable, applied after --grpo-steps")
    r.add_argument("--data-background", dest="data_background", choices=BACKGROUND_STYLES, default=None,
                   help="background of the pretraining/SFT scenes (default plain grey; the suite is judged as is)")
    r.add_argument("--data-grid", dest="data_grid", type=int, default=None,
                   help="put the training scenes' boxes on an N x N grid (default 16, the 128-px token grid; 0 = off)")
    r.add_argument("--data-caption-order", dest="data_caption_order", choices=CAPTION_ORDERS, default=None,
                   help="how training captions order a scene's objects: as sampled (given) or in the raster "
                        "order the image tokens draw them (raster); default: given")
    r.add_argument("--tokenizer", default=None,
                   help="a trained visual tokenizer folder to use instead of training one (copied into OUT/tokenizer)")
    r.add_argument("--snap-background", action=argparse.BooleanOptionalAction, default=None,
                   help="token shards give the plain background's flat patches, away from objects, one code "
                        "(`simplear data tokenize --snap-color`); default: on with --data-background plain "
                        "(the default), which it needs")
    r.set_defaults(func=_recipe)
