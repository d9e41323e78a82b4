"""`simplear eval geneval` and `simplear eval dpg`: benchmark exports for any model."""

from __future__ import annotations

import json
import sys


def _sampling_args(p) -> None:
    p.add_argument("--model", default=None, help="model bundle or released SimpleAR folder (default: embedded)")
    p.add_argument("--visual-tokenizer", default=None, help="visual tokenizer folder (overrides the bundle's)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when present)")
    p.add_argument("--seed", type=int, default=0, help="base seed; each image's seed derives from it")
    p.add_argument("--batch-size", type=int, default=8, help="images per sampler call")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--image-size", type=int, default=None, help="pixels (default: the model's)")
    p.add_argument("--cfg-scale", type=float, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--sampler", default="ar", choices=("ar", "fast", "reference", "jacobi"),
                   help="ar / fast: the fast engine (default); reference: the plain KV-cached sampler; "
                        "jacobi: speculative Jacobi decoding")


def register(top, groups) -> None:
    ev = groups["eval"]
    p = ev.add_parser("geneval", help="generate GenEval's folder layout (and score ShapesWorld prompts)",
                      description="Generate images in GenEval's layout (DIR/00000/metadata.jsonl, "
                      "DIR/00000/samples/0000.png ...). ShapesWorld prompt files are also scored with "
                      "the judge; other prompts need GenEval's own detector. Stopped runs resume.")
    p.add_argument("--prompts", required=True, help="GenEval-schema JSONL (e.g. evaluation_metadata.jsonl)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images-per-prompt", type=int, default=4)
    p.add_argument("--json", action="store_true", help="also print the score as one JSON line")
    _sampling_args(p)
    p.set_defaults(func=_geneval)

    p = ev.add_parser("dpg", help="generate DPG-Bench's 2x2 grids DIR/<id>.png",
                      description="For each {id, prompt} line, four samples in a 2x2 grid saved as "
                      "DIR/<id>.png (DPG-Bench's convention); prints the resolution for its scorer.")
    p.add_argument("--prompts", required=True, help="JSONL of {\"id\", \"prompt\"} lines")
    p.add_argument("--out", required=True, help="output folder")
    _sampling_args(p)
    p.set_defaults(func=_dpg)


def _config(args, images_per_prompt: int):
    from simplear.eval.exports import ExportConfig

    return ExportConfig(images_per_prompt=images_per_prompt, seed=args.seed, batch_size=args.batch_size,
                        limit=args.limit, image_size=args.image_size, cfg_scale=args.cfg_scale,
                        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, sampler=args.sampler)


def _pipeline(args):
    from simplear.pipeline import Pipeline

    return Pipeline.from_pretrained(args.model, visual_tokenizer=args.visual_tokenizer, device=args.device)


def _progress(done: int, total: int) -> None:
    print(f"\r  {done}/{total} images", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _geneval(args) -> int:
    from simplear.eval.exports import export_geneval, read_prompt_file, shapes_prompts
    from simplear.utils import format_down

    config = _config(args, args.images_per_prompt)
    read_prompt_file(args.prompts)  # fail on a bad file before loading the model
    summary = export_geneval(_pipeline(args), args.prompts, args.out, config, progress=_progress)
    print(f"wrote GenEval layout: {summary['out']} ({summary['prompts']} prompts x "
          f"{summary['images_per_prompt']} images; {summary['skipped_prompts']} already done)")
    made = summary["sampling"]
    if made.get("tokens_per_forward"):
        print(f"sampling ({args.sampler}, {made['images']} new images): {format_down(made['tokens_per_forward'], 2)} "
              f"image tokens per forward pass, {format_down(made['seconds_per_image'], 3)} s per image")
    scorable, why = shapes_prompts(args.prompts)
    if not scorable:
        print("not scored: these prompts are outside ShapesWorld's vocabulary, so scoring needs GenEval's "
              f"own detector (github.com/djghosh13/geneval, evaluation/evaluate_images.py). ({why})")
        return 0
    from simplear.eval.score import format_table, score_folder

    summary = score_folder(args.out)
    print(format_table(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


def _dpg(args) -> int:
    from simplear.eval.exports import export_dpg, read_prompt_file

    read_prompt_file(args.prompts, required=("id", "prompt"))
    summary = export_dpg(_pipeline(args), args.prompts, args.out, _config(args, 4), progress=_progress)
    print(f"wrote DPG-Bench grids: {summary['out']} ({summary['prompts']} prompts; "
          f"{summary['skipped_prompts']} already done)")
    print(f"DPG-Bench scorer resolution: {summary['resolution']} "
          f"(each grid is {2 * summary['resolution']}x{2 * summary['resolution']}; pass --resolution "
          f"{summary['resolution']} to compute_dpg_bench.py)")
    return 0
