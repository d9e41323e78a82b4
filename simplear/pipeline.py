"""`Pipeline`: prompt(s) -> images, the diffusers-style entry point of simplear.

    from simplear import Pipeline
    pipe = Pipeline.from_pretrained()                 # the embedded default model
    out = pipe("a photo of two red circles", num_images=4, seed=0)
    out.images[0].save("circles.png")

The pipeline owns a bundle (model, vocabulary, visual tokenizer, simplear.json settings); it
turns text into prompt ids with the vocabulary, samples codes with one of the samplers of
`simplear.sampling`, and decodes them with the visual tokenizer. Settings left as `None` take the
bundle's defaults. Every image gets its own seeded generator (seed + i, or the given list), so an
image does not depend on what else was in the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# "ar" is plain AR sampling on the fast engine ("fast" is its alias); "reference" is the plain
# reference loop; "jacobi" is speculative Jacobi decoding. All sample the same distribution.
SAMPLERS = ("ar", "fast", "reference", "jacobi")


@dataclass
class PipelineOutput:
    images: list  # PIL images, N = len(prompts) * num_images, prompt-major
    codes: Any  # long tensor N×h×w
    stats: dict = field(default_factory=dict)


def _as_prompts(prompt_or_prompts) -> list[str]:
    prompts = [prompt_or_prompts] if isinstance(prompt_or_prompts, str) else list(prompt_or_prompts or [])
    if not prompts:
        raise ValueError("no prompt given")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise ValueError(f"prompts must be strings, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError("empty prompt: describe the image to generate")
    return prompts


class Pipeline:
    samplers = SAMPLERS

    def __init__(self, bundle, device=None, compile: bool = False, kernels: str = "auto"):
        from simplear.sampling.config import check_kernels
        from simplear.utils import pick_device

        check_kernels(kernels)
        self.bundle = bundle
        self.device = pick_device(device) if device is not None else next(bundle.model.parameters()).device
        self.model = bundle.model.to(self.device).eval()
        self.vocab = bundle.vocab
        self.visual_tokenizer = bundle.visual_tokenizer
        if self.visual_tokenizer is None:
            raise ValueError("the bundle was loaded without its visual tokenizer; images cannot be decoded")
        if hasattr(self.visual_tokenizer, "to"):
            self.visual_tokenizer = self.visual_tokenizer.to(self.device)
        self.config = bundle.config
        self.compile = bool(compile)
        self.kernels = kernels
        self._engine = None

    @classmethod
    def from_pretrained(cls, path=None, visual_tokenizer=None, device=None, dtype=None, compile: bool = False,
                        kernels: str = "auto") -> Pipeline:
        """Load a bundle folder (None: the embedded default model in `simplear/assets/default`).

        A released SimpleAR folder also needs `visual_tokenizer` (a Cosmos tokenizer folder).
        The device is CUDA when present unless given. `compile=True` runs the fast engine's decode
        step through `torch.compile`: the first call of each batch shape compiles (tens of seconds
        on CPU), later ones are faster (docs/benchmarks.md), so it pays off for many images.
        `kernels`: the fast engine's decode step, "auto" (fused Triton kernels on CUDA with bf16
        weights), "torch" or "triton" (`FastEngine`).
        """
        from simplear.bundle import load_bundle
        from simplear.sampling.config import check_kernels
        from simplear.utils import pick_device

        check_kernels(kernels)  # before loading the bundle
        device = pick_device(device)
        return cls(load_bundle(path, visual_tokenizer=visual_tokenizer, device=device, dtype=dtype), device, compile,
                   kernels)

    @property
    def engine(self):
        """The fast engine of this model, built on first use (weights snapshot, static cache)."""
        from simplear.sampling.engine import FastEngine

        if self._engine is None:
            self._engine = FastEngine(self.model, self.vocab.visual_offset, self.vocab.codebook_size,
                                      compile=self.compile, kernels=self.kernels)
        return self._engine

    def sampling_config(self, **overrides):
        """The bundle's default settings with the non-None `overrides` applied (validated)."""
        from simplear.sampling.config import SamplingConfig

        base = SamplingConfig.from_dict(self.config.sampling.to_dict())
        return base.with_overrides(**overrides)

    def grid_for(self, image_size: int | None) -> tuple[int, int]:
        """Code grid (h, w) of an image size; None is the bundle's size."""
        if image_size is None:
            return int(self.config.grid[0]), int(self.config.grid[1])
        down = int(self.visual_tokenizer.downsample)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < down or image_size % down:
            raise ValueError(
                f"image_size must be a positive multiple of the visual tokenizer's downsampling {down}, got {image_size!r}"
            )
        return image_size // down, image_size // down

    def __call__(
        self,
        prompt_or_prompts: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        num_images: int = 1,
        image_size: int | None = None,
        cfg_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | Sequence[int] = 0,
        sampler: str = "ar",
        progress: Callable[[Any, int, int], None] | None = None,
        window: int | None = None,
    ) -> PipelineOutput:
        """Generate `num_images` images per prompt.

        negative_prompt: replaces the unconditional CFG branch (one for all, or one per prompt).
        seed: image i uses seed + i; or a list with one seed per image.
        progress: called as progress(codes, done, total) while sampling (codes: N×total so far).
        window: Jacobi draft window (sampler="jacobi" only).
        """
        import torch

        from simplear.sampling.engine import FastEngine
        from simplear.sampling.jacobi import DEFAULT_WINDOW, jacobi_sample
        from simplear.sampling.reference import reference_sample
        from simplear.visual_tokenizers.images import tensor_to_pil

        # 1. Check every input before any work.
        prompts = _as_prompts(prompt_or_prompts)
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be an integer >= 1, got {num_images!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
        config = self.sampling_config(cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p)
        grid = self.grid_for(image_size)
        num_tokens = grid[0] * grid[1]
        total = len(prompts) * num_images
        if isinstance(seed, int) and not isinstance(seed, bool):
            seeds = [seed + i for i in range(total)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != total:
                raise ValueError(f"got {len(seeds)} seeds for {total} images")
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) or negative_prompt is None \
            else list(negative_prompt)
        if len(negatives) != len(prompts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")

        # 2. Prompt ids: the vocabulary owns the template; check they fit the context.
        context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        room = self.vocab.max_prompt_tokens(context, num_tokens) if context else None
        cond, uncond = [], []
        for prompt, negative in zip(prompts, negatives):
            ids = self.vocab.encode_prompt(prompt)
            neg = self.vocab.encode_negative(negative)
            for what, seq in (("prompt", ids), ("negative prompt", neg)):
                if room is not None and len(seq) > room:
                    raise ValueError(
                        f"{what} is {len(seq)} tokens; with {num_tokens} image tokens the model's context of "
                        f"{context} leaves room for {room}: shorten it or lower image_size"
                    )
            cond += [ids] * num_images
            uncond += [neg] * num_images

        # 3. Sample codes.
        generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        kwargs = dict(num_tokens=num_tokens, generator=generators, config=config, pad_id=self.vocab.pad_id,
                      progress=progress)
        visual = dict(visual_offset=self.vocab.visual_offset, codebook_size=self.vocab.codebook_size)
        started = time.perf_counter()
        if sampler in ("ar", "fast"):
            engine: FastEngine = self.engine
            result = engine.sample(cond, uncond, **kwargs)
        elif sampler == "reference":
            result = reference_sample(self.model, cond, uncond, **visual, **kwargs)
        else:
            result = jacobi_sample(self.model, cond, uncond, **visual, window=window or DEFAULT_WINDOW,
                                   engine=self.engine, grid_width=grid[1], **kwargs)
        sampled = time.perf_counter()

        # 4. Decode codes to images.
        codes = result.codes.reshape(total, *grid)
        with torch.inference_mode():
            pixels = self.visual_tokenizer.decode(codes)
        images = tensor_to_pil(pixels.float().cpu())
        finished = time.perf_counter()
        stats = dict(result.stats)
        stats.update(
            sampler=sampler, images=total, grid=list(grid), image_size=grid[0] * int(self.visual_tokenizer.downsample),
            sampling_seconds=sampled - started, decode_seconds=finished - sampled, seconds=finished - started,
            image_tokens_per_second=total * num_tokens / max(sampled - started, 1e-9),
            settings=dict(config.to_dict(), seeds=seeds, negative_prompt=negative_prompt),
        )
        return PipelineOutput(images=images, codes=codes.cpu(), stats=stats)


@dataclass(frozen=True)
class GenerateConfig:
    """Everything `simplear generate` does: which model, which prompts, which settings, where to."""

    prompts: tuple[str, ...]
    out: str
    model: str | None = None
    visual_tokenizer: str | None = None
    negative_prompt: str | None = None
    num_images: int = 1
    image_size: int | None = None
    seed: int = 0
    cfg_scale: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    sampler: str = "ar"
    window: int | None = None
    device: str | None = None
    compile: bool = False
    kernels: str = "auto"


def _slug(text: str, limit: int = 40) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return "-".join(part for part in keep.split("-") if part)[:limit] or "image"


def generate_files(config: GenerateConfig, progress: Callable[[Any, int, int], None] | None = None) -> dict:
    """Generate images to `config.out` as PNGs plus `generate.json` (every setting, per-image seed).

    Files are written atomically; the JSON sidecar is written last. Returns the sidecar's content.
    """
    from pathlib import Path

    from simplear.utils import atomic_path, atomic_write_json

    _as_prompts(list(config.prompts))  # fail on bad prompts before loading a model
    pipe = Pipeline.from_pretrained(config.model, visual_tokenizer=config.visual_tokenizer, device=config.device,
                                    compile=config.compile, kernels=config.kernels)
    out = pipe(
        list(config.prompts), negative_prompt=config.negative_prompt, num_images=config.num_images,
        image_size=config.image_size, cfg_scale=config.cfg_scale, temperature=config.temperature,
        top_k=config.top_k, top_p=config.top_p, seed=config.seed, sampler=config.sampler,
        progress=progress, window=config.window,
    )
    folder = Path(config.out)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = out.stats["settings"]["seeds"]
    records = []
    for i, image in enumerate(out.images):
        prompt_index, image_index = divmod(i, config.num_images)
        prompt = config.prompts[prompt_index]
        name = f"{prompt_index:03d}-{image_index:02d}-{_slug(prompt)}.png"
        with atomic_path(folder / name) as tmp:
            image.save(tmp, format="PNG")
        records.append({"file": name, "prompt": prompt, "seed": seeds[i], "index": image_index})
    stats = {k: v for k, v in out.stats.items() if k != "settings"}
    sidecar = {
        "model": str(pipe.bundle.path) if pipe.bundle.path is not None else None,
        "visual_tokenizer": pipe.config.visual_tokenizer,
        "device": str(pipe.device),
        "settings": {
            **out.stats["settings"],
            "sampler": config.sampler, "num_images": config.num_images, "image_size": out.stats["image_size"],
            "grid": out.stats["grid"], "seed": config.seed, "window": config.window, "compile": config.compile,
            "kernels": pipe.engine.kernels if config.sampler != "reference" else None,
            "prompt_template": pipe.config.prompt_template,
        },
        "images": records,
        "stats": stats,
    }
    atomic_write_json(folder / "generate.json", sidecar)
    return sidecar
