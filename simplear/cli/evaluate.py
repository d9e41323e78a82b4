"""Judge verbs: `eval score DIR [--json]` and `eval calibrate [--resolutions ...] [--json]`.

Thin: each handler parses its flags, builds a config and makes one library call
(`simplear.eval.score.score_folder`, `simplear.eval.calibrate.calibrate`). With `--json` the
last line printed is one JSON object, for scripts.
"""

from __future__ import annotations

import json


def _eval_score(args) -> int:
    from simplear.eval.score import ScoreConfig, format_table, score_folder

    summary = score_folder(args.dir, ScoreConfig(processes=args.processes))
    print(format_table(summary))
    print(f"results: {summary['results']} ({summary['images_per_second']:.1f} images/s)")
    if args.json:
        print(json.dumps({"overall": summary["overall"], "tags": summary["tags"], "images": summary["images"]}))
    return 0


def _eval_calibrate(args) -> int:
    from simplear.eval.calibrate import CalibrationConfig, calibrate, format_report

    config = CalibrationConfig(
        resolutions=tuple(args.resolutions),
        seed=args.seed,
        images_per_prompt=args.images_per_prompt,
        per_tag=args.per_tag,
        blur_radius=args.blur_radius,
        noise_std=args.noise_std,
        jpeg_quality=args.jpeg_quality,
        jpeg_subsampling=args.jpeg_subsampling,
    )
    report = calibrate(config)
    print(format_report(report))
    if args.json:
        summary = {
            str(r["resolution"]): {
                "ground_truth": r["ground_truth"]["overall"],
                "corrupted_rate": r["corrupted"]["rate"],
                "degradation_cost": {k: v["cost"] for k, v in r["degraded"].items()},
            }
            for r in report["results"]
        }
        print(json.dumps({"config": report["config"], "results": summary}))
    return 0


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(top, groups) -> None:
    p = groups["eval"].add_parser(
        "score",
        help="judge every image of a GenEval-layout folder; writes DIR/results.jsonl",
        description="Judge DIR/NNNNN/samples/*.png against DIR/NNNNN/metadata.jsonl; prints the "
        "per-tag table (overall = mean over tags) and writes DIR/results.jsonl.",
    )
    p.add_argument("dir", help="folder in GenEval's layout (as written by `simplear eval render`)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    p.add_argument("--processes", type=_positive_int, default=1, help="worker processes (default 1)")
    p.set_defaults(func=_eval_score)

    p = groups["eval"].add_parser(
        "calibrate",
        help="measure the judge: ground-truth, corrupted and degraded renders of the suite",
        description="Ground-truth renders of the ShapesWorld suite, renders of corrupted specs scored "
        "against the original prompt, and mildly blurred / noisy / JPEG renders; prints the tables.",
    )
    p.add_argument("--resolutions", type=_positive_int, nargs="+", default=[64, 128, 256], metavar="R")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images-per-prompt", type=_positive_int, default=1)
    p.add_argument("--per-tag", type=_positive_int, default=None, help="only the first N prompts of each tag")
    p.add_argument("--blur-radius", type=float, default=0.5, help="Gaussian blur sigma in pixels")
    p.add_argument("--noise-std", type=float, default=6.0, help="Gaussian noise std (0..255 units)")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument(
        "--jpeg-subsampling", type=int, choices=(0, 1, 2), default=0, help="0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0"
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary on the last line")
    p.set_defaults(func=_eval_calibrate)
