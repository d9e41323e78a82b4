"""`simplear generate PROMPT [PROMPT ...] --out DIR`: images from text with a model bundle."""

from __future__ import annotations

import sys
from pathlib import Path


def register(top, groups) -> None:
    from simplear.sampling.config import ENGINE_KERNELS  # no torch at import

    p = top.add_parser(
        "generate",
        help="generate images from prompts (PNGs plus a generate.json with every setting)",
        description="Generate images from text prompts. Without --model the embedded default model is used. "
        "Settings left out take the model bundle's defaults.",
    )
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="text prompt(s); quote each one")
    p.add_argument("--out", default=None,
                   help="output folder for PNGs and generate.json (default: a new ./outputs/NNNN per run)")
    p.add_argument("--model", default=None, help="model bundle folder, hub id or released SimpleAR folder")
    p.add_argument("--visual-tokenizer", default=None, help="visual tokenizer folder (needed for released SimpleAR)")
    p.add_argument("--negative-prompt", default=None, help="text for the unconditional CFG branch")
    p.add_argument("--num-images", type=int, default=1, help="images per prompt (default 1)")
    p.add_argument("--image-size", type=int, default=None, help="pixels per side; a multiple of the tokenizer's downsampling")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i (default 0)")
    p.add_argument("--cfg-scale", type=float, default=None, help="classifier-free guidance scale s (1 = off)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely codes (0 = all)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus mass in (0, 1]")
    p.add_argument("--sampler", choices=("ar", "reference", "jacobi"), default="ar",
                   help="ar: fast engine; reference: plain loop; jacobi: speculative Jacobi decoding")
    p.add_argument("--window", type=int, default=None, help="Jacobi draft window (default 16)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step: slow first batch (tens of seconds), faster after; "
                        "worth it for many images (a 0.5B model on an H100: 5.4 instead of 12.2 s per 1024-px image)")
    p.add_argument("--kernels", choices=ENGINE_KERNELS, default="auto",
                   help="the fast engine's decode step: fused Triton kernels (CUDA) or torch ops; auto: Triton "
                        "on CUDA with bf16 weights when triton is installed")
    p.add_argument("--json", action="store_true", help="print generate.json instead of file names")
    p.set_defaults(func=_run)


def _next_free(parent: Path) -> Path:
    taken = [int(p.name) for p in parent.glob("[0-9][0-9][0-9][0-9]") if p.name.isdigit()] if parent.is_dir() else []
    return parent / f"{max(taken, default=0) + 1:04d}"


def _run(args) -> int:
    import json

    from tqdm import tqdm

    from simplear.pipeline import GenerateConfig, generate_files

    if args.out is None:  # a fresh folder per run, so a second run never overwrites the first
        args.out = str(_next_free(Path("outputs")))
    config = GenerateConfig(
        prompts=tuple(args.prompts), out=args.out, model=args.model, visual_tokenizer=args.visual_tokenizer,
        negative_prompt=args.negative_prompt, num_images=args.num_images, image_size=args.image_size,
        seed=args.seed, cfg_scale=args.cfg_scale, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, sampler=args.sampler, window=args.window, device=args.device,
        compile=args.compile, kernels=args.kernels,
    )
    bar = None

    def progress(codes, done, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="tok", desc="sampling", file=sys.stderr, leave=False)
        bar.update(done - bar.n)

    try:
        sidecar = generate_files(config, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(sidecar, indent=2))
    else:
        for record in sidecar["images"]:
            print(f"{args.out}/{record['file']}")
        stats = sidecar["stats"]
        print(f"{stats['images']} image(s), {stats['tokens']} tokens each, {stats['forward_passes']} forward passes, "
              f"{stats['sampling_seconds']:.2f} s sampling", file=sys.stderr)
    return 0
