"""ShapesWorld verbs: `data shapes`, `eval suite`, `eval render`.

Thin: each handler parses its flags, builds a config and makes one library call
(`write_shapes_dataset`, `make_suite` + `write_prompts`, `load_prompts` + `render_suite`).
"""

from __future__ import annotations

import argparse


def _heldout(text: str) -> tuple[tuple[str, str], ...]:
    """`"blue star,red heart"` -> (("blue", "star"), ("red", "heart")); `none` -> ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    pairs = []
    for item in text.split(","):
        words = item.split()
        if len(words) != 2:
            raise argparse.ArgumentTypeError(
                f"expected 'colour class' pairs separated by commas, got {item!r}"
            )
        pairs.append((words[0], words[1]))
    return tuple(pairs)


def _data_shapes(args) -> int:
    from simplear.data.shapes import DEFAULT_HELDOUT, ShapesConfig
    from simplear.data.shapes_dataset import ShapesDatasetConfig, write_shapes_dataset

    heldout = DEFAULT_HELDOUT if args.heldout is None else args.heldout
    config = ShapesDatasetConfig(
        num=args.num,
        resolution=args.resolution,
        seed=args.seed,
        workers=args.workers,
        shapes=ShapesConfig(heldout=heldout, background=args.background, grid=args.grid,
                           caption_order=args.caption_order),
    )
    summary = write_shapes_dataset(args.out, config, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {summary['images']} images at {summary['resolution']} px to {summary['out']}")
    return 0


def _eval_suite(args) -> int:
    from simplear.data.shapes import DEFAULT_HELDOUT
    from simplear.eval.suite import make_suite, write_prompts

    prompts = make_suite(args.seed, heldout=DEFAULT_HELDOUT if args.heldout is None else args.heldout)
    write_prompts(args.out, prompts)
    held = sum(1 for p in prompts if p.get("heldout"))
    print(f"wrote {len(prompts)} prompts ({held} with a held-out pair) to {args.out}")
    return 0


def _eval_render(args) -> int:
    from simplear.eval.suite import load_prompts, render_suite

    summary = render_suite(
        load_prompts(args.prompts),
        args.out,
        resolution=args.resolution,
        images_per_prompt=args.images_per_prompt,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"wrote {summary['images']} images for {summary['prompts']} prompts to {summary['out']}")
    return 0


def register(top, groups) -> None:
    from simplear.data.shapes import BACKGROUND_STYLES, CAPTION_ORDERS

    heldout_help = (
        "held-out (colour, class) pairs as 'colour class' separated by commas, or 'none' "
        "(default: blue star, red heart, green cross, yellow triangle, purple circle, orange square)"
    )

    p = groups["data"].add_parser(
        "shapes",
        help="render a ShapesWorld dataset (images + captions.jsonl)",
        description="Render ShapesWorld scenes into DIR/images/ with DIR/captions.jsonl "
        "(one {image, captions, metadata, seed, objects} object per image).",
    )
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--num", type=int, required=True, help="number of images")
    p.add_argument("--resolution", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument("--heldout", type=_heldout, default=None, help=heldout_help)
    p.add_argument("--background", choices=BACKGROUND_STYLES, default="textured",
                   help="textured (default, as the suite is rendered), flat (one random tone per image) "
                        "or plain (the same mid grey everywhere)")
    p.add_argument("--grid", type=int, default=0,
                   help="put every box on an N x N grid of the image (e.g. 16: the token grid of an 8x "
                        "tokenizer at 128 px); 0 = anywhere (default)")
    p.add_argument("--caption-order", choices=CAPTION_ORDERS, default="given",
                   help="how captions order a scene's objects: as sampled, with word order carrying no meaning "
                        "(given, default), or in the raster order the image tokens draw them (raster)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_data_shapes)

    p = groups["eval"].add_parser(
        "suite",
        help="write the ShapesWorld prompt suite (553 GenEval-schema prompts)",
        description="Write 553 ShapesWorld prompts in GenEval's schema and tag proportions; "
        'lines using a held-out (colour, class) pair carry "heldout": true.',
    )
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--heldout", type=_heldout, default=None, help=heldout_help)
    p.set_defaults(func=_eval_suite)

    p = groups["eval"].add_parser(
        "render",
        help="render ground-truth images for a prompt file in GenEval's folder layout",
        description="Render ground-truth ShapesWorld images for every prompt into "
        "DIR/00000/metadata.jsonl, DIR/00000/samples/0000.png, ...",
    )
    p.add_argument("--prompts", required=True, help="prompt JSONL in GenEval's schema")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--resolution", type=int, required=True, help="image side in pixels")
    p.add_argument("--images-per-prompt", type=int, default=4, help="images per prompt (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=_eval_render)
