"""CLI verbs for visual tokenizers and token shards (thin: parse, build a config, one call).

- `simplear train tokenizer --recipe shapes --out DIR [overrides]`
- `simplear data tokenize --data CAPTIONS.jsonl --tokenizer DIR --out DIR --resolution R`
- `simplear eval tokenizer --tokenizer DIR --resolution R [--resolution R2]`
"""

from __future__ import annotations

import argparse
import json


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _train_tokenizer(args) -> int:
    from simplear.train.tokenizer import recipe_config, train_tokenizer

    cfg = recipe_config(
        args.recipe,
        out=args.out,
        data=args.data,
        levels=args.levels,
        downsample=args.downsample,
        channels=args.channels,
        res_blocks=args.res_blocks,
        norm=args.norm,
        decoder_channels=args.decoder_channels,
        decoder_res_blocks=args.decoder_res_blocks,
        resolutions=args.resolutions,
        crop=args.crop,
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        warmup=args.warmup,
        edge_weight=args.edge_weight,
        init_from=args.init_from,
        freeze_encoder=args.freeze_encoder or None,
        finish_steps=args.finish_steps,
        finish_resolutions=args.finish_resolutions,
        finish_lr=args.finish_lr,
        finish_edge_weight=args.finish_edge_weight,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        eval_images=args.eval_images,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
    )
    train_tokenizer(cfg)
    print(f"tokenizer saved in {cfg.out}")
    return 0


def _tokenize(args) -> int:
    from simplear.data.shards import TokenizeConfig, tokenize_dataset

    cfg = TokenizeConfig(
        data=args.data,
        tokenizer=args.tokenizer,
        out=args.out,
        resolution=args.resolution,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        device=args.device,
        limit=args.limit,
        snap_color=args.snap_color,
        snap_radius=args.snap_radius,
    )
    manifest = tokenize_dataset(cfg)
    if manifest is not None:  # only rank 0 returns the manifest under torchrun
        snap = manifest.get("snap")
        print(
            f"{manifest['count']} images -> {len(manifest['shards'])} shards in {args.out} "
            f"({manifest['num_skipped']} skipped"
            + (f"; {snap['snapped']} flat patches given code {snap['code']}" if snap else "") + ")"
        )
    return 0


def _eval_tokenizer(args) -> int:
    from simplear.train.tokenizer_eval import TokenizerEvalConfig, evaluate_tokenizer

    cfg = TokenizerEvalConfig(
        tokenizer=args.tokenizer,
        resolutions=tuple(args.resolution),
        num_images=args.num_images,
        suite_seed=args.seed,
        device=args.device,
        out=args.out,
    )
    print(json.dumps(evaluate_tokenizer(cfg), indent=2))
    return 0


def register(top, groups) -> None:
    p = groups["train"].add_parser(
        "tokenizer",
        help="train an FSQ visual tokenizer (conv autoencoder)",
        description="Train our FSQ autoencoder; flags override the recipe. Resumes from OUT/train/checkpoint.pt.",
    )
    p.add_argument("--recipe", default="shapes", help="named recipe (shapes, shapes-finish, shapes-d16); default: shapes")
    p.add_argument("--out", required=True, help="output tokenizer folder")
    p.add_argument("--data", help="'shapes' (render on the fly), a captions JSONL or an image folder")
    p.add_argument("--levels", type=_ints, help="FSQ levels, e.g. 8,5,5,5")
    p.add_argument("--downsample", type=int, choices=(4, 8, 16, 32))
    p.add_argument("--channels", type=_ints, help="widths per level, log2(downsample)+1 entries")
    p.add_argument("--res-blocks", type=_ints, help="residual blocks per level")
    p.add_argument("--decoder-channels", type=_ints,
                   help="the decoder's own widths per level (default: --channels); with --init-from and "
                        "--freeze-encoder, a new decoder of this shape is trained for the existing codes")
    p.add_argument("--decoder-res-blocks", type=_ints, help="the decoder's own residual blocks per level "
                                                              "(default: --res-blocks)")
    p.add_argument("--norm", choices=("group", "pixel"),
                   help="normalisation layers: group (GroupNorm over the whole image) or pixel (each "
                        "position's own statistics: a code depends only on nearby pixels); default: the "
                        "recipe's (shapes: pixel; shapes-finish, shapes-d16: group)")
    p.add_argument("--resolutions", type=_ints, help="training image sizes, e.g. 64,128")
    p.add_argument("--crop", type=int, help="random crop side (0: whole images)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, help="steps on crops (the finishing phase, --finish-steps, comes after)")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int, help="linear warm-up steps")
    p.add_argument("--edge-weight", type=float, help="extra loss weight on pixels near colour edges")
    p.add_argument("--init-from", help="start from this tokenizer folder's weights (fine-tuning)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="with --init-from: train the decoder only, so the codes (and shards, models) stay valid")
    p.add_argument("--finish-steps", type=int,
                   help="after --steps, this many steps on whole images at --finish-resolutions (0: none)")
    p.add_argument("--finish-resolutions", type=_ints,
                   help="whole-image sizes of the finishing phase, one equal block each, in order, e.g. 64,96")
    p.add_argument("--finish-lr", type=float, help="peak learning rate of each finishing block")
    p.add_argument("--finish-edge-weight", type=float, help="edge weight while finishing (default: --edge-weight)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when present)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   help="training forward: fp32 (default), bf16 autocast, or auto (bf16 on CUDA and on CPUs "
                        "with native bf16 matmuls); FSQ rounding, the loss and evaluation stay float32")
    p.add_argument("--eval-images", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.set_defaults(func=_train_tokenizer)

    p = groups["data"].add_parser(
        "tokenize",
        help="images + captions -> token shards",
        description="Encode a captions JSONL into token shards + manifest.json. Resumable; "
        "run under `torchrun --nproc_per_node=N` for N processes.",
    )
    p.add_argument("--data", required=True, help="JSONL with 'image' (relative path) and 'captions'")
    p.add_argument("--tokenizer", required=True, help="visual tokenizer folder (ours or Cosmos)")
    p.add_argument("--out", required=True, help="output shard folder")
    p.add_argument("--resolution", type=int, required=True, help="square size after centre-crop/resize")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", help="default: CUDA when present")
    p.add_argument("--limit", type=int, help="only the first N lines")
    p.add_argument("--snap-color", type=_ints, metavar="R,G,B",
                   help="give patches wholly of this colour (a plain background), whose neighbours are too, "
                        "the one code a uniform image of it encodes to")
    p.add_argument("--snap-radius", type=int, default=1,
                   help="with --snap-color: how many rings of neighbouring patches must be that colour too "
                        "(default 1; 0 also snaps patches beside an edge, which blurs it)")
    p.set_defaults(func=_tokenize)

    p = groups["eval"].add_parser(
        "tokenizer",
        help="PSNR, codebook usage and judge score of round-tripped ShapesWorld renders",
        description="Round-trip (encode -> decode) ShapesWorld renders and score them with the judge.",
    )
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--resolution", type=int, action="append", required=True, help="repeatable")
    p.add_argument("--num-images", type=int, default=553, help="suite prompts to use (default: all 553)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--out", help="also write the results as JSON here")
    p.set_defaults(func=_eval_tokenizer)
