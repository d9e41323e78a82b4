"""`simplear <verb>`: argument parsing only; every verb makes one library call.

Each file in this folder registers one family of verbs. Grouped verbs (`simplear data ...`,
`simplear train ...`, `simplear eval ...`, `simplear bench ...`) share a sub-parser made here.
Handlers import the library lazily so `simplear --help` stays fast.
Bad input raises ValueError / FileNotFoundError in the library; it is printed as
`simplear: error: ...` with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

GROUPS = {
    "data": "make ShapesWorld data and tokenize image datasets",
    "train": "train visual tokenizers, AR models (pretrain / SFT) and GRPO",
    "eval": "GenEval-style suites, rendering, scoring and benchmark exports",
    "bench": "speed benchmarks",
}
# One module per family of verbs; each defines register(top, groups).
MODULES = [
    "shapes",  # data shapes, eval suite, eval render
    "evaluate",  # eval score
    "tokenizer",  # train tokenizer, data tokenize
    "train",  # train ar, plot
    "generate",  # generate
    "bench",  # bench sampling
    "grpo",  # train grpo, recipe
    "rejection",  # data rejection-samples
    "exports",  # eval geneval, eval dpg
    "serve",  # serve
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simplear", description="Autoregressive text-to-image generation (SimpleAR)."
    )
    top = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    groups = {}
    for name, help_text in GROUPS.items():
        group = top.add_parser(name, help=help_text, description=help_text)
        groups[name] = group.add_subparsers(dest="subcommand", required=True, metavar="VERB")
    for module in MODULES:
        importlib.import_module(f"simplear.cli.{module}").register(top, groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from simplear.utils import keep_freed_memory

    keep_freed_memory()  # CPU training and sampling free and re-allocate large tensors every step
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        print(f"simplear: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("simplear: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
