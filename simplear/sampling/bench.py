"""The sampling benchmark: baseline, reference, fast engine and Jacobi on one model and setting.

`run_sampling_benchmark(BenchConfig(...))` measures, for each sampler and batch size, image
tokens/s, seconds/image, forward passes/image (a CFG pair counts as one) and peak memory, after
one untimed warm-up run of the same shape (allocation, graph capture, compilation). With
`repeats` > 1 the samplers take turns (round r times every sampler once) and each one's fastest
round counts, so slow spells of a shared machine fall on all samplers alike. The model is
a bundle (`model`), the embedded default, or a random model of a size preset from
`simplear.model` (`preset`): random weights are fine for speed, not for Jacobi's acceptance rate.

`max_slow_tokens` caps the tokens that the two slow samplers (baseline, reference) run at a
large size: their per-token speed is measured on the first tokens and seconds/image is
extrapolated linearly (marked `extrapolated`), which flatters them, since attention grows with
the sequence.
"""

from __future__ import annotations

import platform
import resource
import time
from dataclasses import asdict, dataclass

import torch

from simplear.sampling.config import SamplingConfig, check_kernels
from simplear.utils import format_down

SAMPLERS = ("baseline", "reference", "engine", "jacobi")
# Random stand-ins: (text vocabulary, codebook, downsampling, default image size).
PRESET_WORLDS = {
    "tiny": (256, 64, 8, 64),
    "shapes": (512, 1000, 8, 128),  # the embedded default's tokenizer: FSQ 8·5·5·5, 128 px -> 16×16
    "simplear-0.5b": (151_672, 64_000, 16, 1024),  # Qwen2.5 text vocabulary + SimpleAR specials
    "simplear-1.5b": (151_672, 64_000, 16, 1024),
}


@dataclass(frozen=True)
class BenchConfig:
    model: str | None = None  # bundle folder; None and no preset: the embedded default model
    preset: str | None = None  # random weights of this size preset instead of a bundle
    image_size: int | None = None  # default: the bundle's / preset's
    batch_sizes: tuple[int, ...] = (1, 16)
    samplers: tuple[str, ...] = SAMPLERS
    # Sampling settings; None: the bundle's own defaults (a preset: SimpleAR's CFG 6.0, temperature 1.0).
    cfg_scale: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    window: int = 16
    device: str | None = None
    dtype: str = "float32"
    compile: bool = False
    cuda_graphs: bool | None = None  # default: on for CUDA
    kernels: str = "auto"  # the engine's decode kernels: auto | torch | triton (FastEngine's `kernels`)
    max_slow_tokens: int | None = None
    prompt_tokens: int = 24  # random prompts (preset models)
    seed: int = 0
    repeats: int = 1  # timed rounds (each sampler once per round, interleaved); the fastest counts

    def __post_init__(self) -> None:
        bad = [s for s in self.samplers if s not in SAMPLERS]
        if bad or not self.samplers:
            raise ValueError(f"unknown samplers {bad}; choose from {', '.join(SAMPLERS)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if self.preset is not None and self.preset not in PRESET_WORLDS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(PRESET_WORLDS)}")
        if self.model is not None and self.preset is not None:
            raise ValueError("give a model bundle or a preset, not both")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        check_kernels(self.kernels)
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        SamplingConfig().with_overrides(**self.sampling_overrides())  # validates the given values

    def sampling_overrides(self) -> dict:
        return dict(cfg_scale=self.cfg_scale, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


@dataclass
class _Setup:
    model: object
    visual_offset: int
    codebook_size: int
    num_tokens: int
    grid_width: int
    sampling: SamplingConfig  # the model's defaults with the benchmark's overrides
    cond: list[list[int]]  # a pool of prompts, cycled to fill a batch
    uncond: list[int]
    pad_id: int
    description: str


def _setup(config: BenchConfig, device, dtype) -> _Setup:
    if config.preset is None:
        from simplear.bundle import load_bundle

        bundle = load_bundle(config.model, device=device, dtype=dtype, load_visual=False)
        vocab, grid = bundle.vocab, bundle.config.grid
        if config.image_size is not None:
            down = bundle.config.image_size // grid[0]
            if config.image_size % down:
                raise ValueError(f"image_size must be a multiple of {down}")
            grid = (config.image_size // down, config.image_size // down)
        prompts = ["a photo of two red circles", "a blue square left of a green star", "three yellow hearts",
                   "a photo of a purple triangle", "a photo of four orange crosses"]
        where = str(bundle.path)
        sampling = SamplingConfig.from_dict(bundle.config.sampling.to_dict())
        return _Setup(bundle.model, vocab.visual_offset, vocab.codebook_size, grid[0] * grid[1], grid[1],
                      sampling.with_overrides(**config.sampling_overrides()),
                      [vocab.encode_prompt(p) for p in prompts], vocab.encode_unconditional(), vocab.pad_id,
                      f"bundle {where}")
    from simplear.model import build_model

    text, codebook, down, size = PRESET_WORLDS[config.preset]
    size = config.image_size or size
    if size % down:
        raise ValueError(f"image_size must be a multiple of {down} for preset {config.preset}")
    num_tokens = (size // down) ** 2
    model = build_model(config.preset, text + codebook, seed=config.seed,
                        max_position_embeddings=max(4096, num_tokens + 256))
    model = model.to(device=device, dtype=dtype).eval()
    g = torch.Generator().manual_seed(config.seed)
    cond = [torch.randint(1, text, (config.prompt_tokens - i,), generator=g).tolist() for i in range(5)]
    uncond = torch.randint(1, text, (8,), generator=g).tolist()
    sampling = SamplingConfig().with_overrides(**config.sampling_overrides())
    return _Setup(model, text, codebook, num_tokens, size // down, sampling, cond, uncond, 0,
                  f"random {config.preset} weights ({size} px, {num_tokens} tokens, {codebook} codes)")


def _peak_reset(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # CPU: the process's resident high-water mark so far (it never goes down).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_sampling_benchmark(config: BenchConfig, log=None) -> dict:
    """Measure every sampler at every batch size; returns a JSON-ready dict of rows and ratios."""
    from simplear.sampling.baseline import simplear_baseline_sample
    from simplear.sampling.engine import FastEngine
    from simplear.sampling.jacobi import jacobi_sample
    from simplear.sampling.reference import reference_sample
    from simplear.utils import pick_device

    device = pick_device(config.device)
    dtype = getattr(torch, config.dtype)
    setup = _setup(config, device, dtype)
    sampling = setup.sampling
    engine = FastEngine(setup.model, setup.visual_offset, setup.codebook_size, compile=config.compile,
                        cuda_graphs=config.cuda_graphs, kernels=config.kernels)
    visual = dict(visual_offset=setup.visual_offset, codebook_size=setup.codebook_size)

    def run(name: str, batch: int, num_tokens: int, seed: int):
        cond = [setup.cond[i % len(setup.cond)] for i in range(batch)]
        gen = torch.Generator(device=device).manual_seed(seed)
        common = dict(num_tokens=num_tokens, config=sampling, pad_id=setup.pad_id)
        if name == "baseline":
            return simplear_baseline_sample(setup.model, cond, setup.uncond, seed=seed, **visual, **common)
        if name == "reference":
            return reference_sample(setup.model, cond, setup.uncond, generator=gen, **visual, **common)
        if name == "engine":
            return engine.sample(cond, setup.uncond, generator=gen, **common)
        return jacobi_sample(setup.model, cond, setup.uncond, generator=gen, window=config.window,
                             engine=engine, grid_width=setup.grid_width, **visual, **common)

    rows = []
    for batch in config.batch_sizes:
        plan = {}
        for name in config.samplers:
            slow = name in ("baseline", "reference") and config.max_slow_tokens is not None
            plan[name] = min(setup.num_tokens, config.max_slow_tokens) if slow else setup.num_tokens
        seconds = {name: float("inf") for name in config.samplers}
        results, peaks = {}, {}
        # The repeats are interleaved (every sampler once per round), so a slow spell of a shared
        # machine hits all samplers alike and the fastest round of each is compared; each
        # sampler's warm-up and peak memory belong to its first round.
        for round_ in range(config.repeats):
            for name in config.samplers:
                tokens = plan[name]
                if round_ == 0:
                    # Warm-up of the same shape: allocations, CUDA graph capture, compilation.
                    run(name, batch, tokens if name in ("engine", "jacobi") else min(tokens, 8), config.seed + 1)
                    _peak_reset(device)
                started = time.perf_counter()
                result = run(name, batch, tokens, config.seed)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds[name] = min(seconds[name], time.perf_counter() - started)
                if round_ == 0:
                    results[name], peaks[name] = result, _peak_mb(device)
        for name in config.samplers:
            tokens, stats = plan[name], results[name].stats
            scale = setup.num_tokens / tokens
            row = {
                "sampler": name,
                "batch": batch,
                "tokens_per_image": setup.num_tokens,
                "measured_tokens": tokens,
                "extrapolated": tokens != setup.num_tokens,
                "seconds_per_image": seconds[name] * scale / batch,
                "image_tokens_per_second": batch * tokens / seconds[name],
                "forward_passes_per_image": stats["forward_passes"] * scale,
                "tokens_per_forward": tokens / stats["forward_passes"],
                "peak_memory_mb": peaks[name],
                "repeats": config.repeats,
            }
            if name == "jacobi":
                row["mean_tokens_per_forward"] = stats["mean_tokens_per_forward"]
            if name == "baseline":
                row["clamped_text_tokens"] = stats["clamped_text_tokens"]
            rows.append(row)
            if log is not None:
                log(row)

    def find(name, batch):
        return next((r for r in rows if r["sampler"] == name and r["batch"] == batch), None)

    speedups = {}
    for batch in config.batch_sizes:
        base = find("baseline", batch)
        for name in ("reference", "engine", "jacobi"):
            other = find(name, batch)
            if base and other:
                speedups[f"{name}_vs_baseline_batch{batch}"] = base["seconds_per_image"] / other["seconds_per_image"]
    return {
        "model": setup.description,
        "settings": {**asdict(config), **sampling.to_dict(), "batch_sizes": list(config.batch_sizes),
                     "samplers": list(config.samplers), "engine_kernels": engine.kernels},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "rows": rows,
        "speedups": speedups,
    }


def format_table(result: dict) -> str:
    """A plain-text table of the rows for the terminal and docs/benchmarks.md (figures truncated)."""
    head = f"{'sampler':<10} {'batch':>5} {'tok/s':>10} {'s/image':>9} {'passes/img':>10} {'tok/pass':>8} {'peak MB':>9}"
    st = result["settings"]
    sampling = (f"sampling: CFG {st['cfg_scale']}, temperature {st['temperature']}, top-k {st['top_k']}, "
                f"top-p {st['top_p']}, Jacobi window {st['window']}")
    engine = f"engine kernels: {st['engine_kernels']}" + (", torch.compile" if st["compile"] else "")
    lines = [f"model: {result['model']}", f"device: {result['device']}", sampling, engine, head, "-" * len(head)]
    for r in result["rows"]:
        mark = "*" if r["extrapolated"] else ""
        lines.append(
            f"{r['sampler']:<10} {r['batch']:>5} {format_down(r['image_tokens_per_second'], 1):>10} "
            f"{format_down(r['seconds_per_image'], 3):>8}{mark:1} {format_down(r['forward_passes_per_image'], 0):>10} "
            f"{format_down(r.get('mean_tokens_per_forward', r['tokens_per_forward']), 2):>8} "
            f"{format_down(r['peak_memory_mb'], 0):>9}"
        )
    if any(r["extrapolated"] for r in result["rows"]):
        lines.append("* measured on the first tokens, extrapolated to a whole image")
    for key, value in result["speedups"].items():
        lines.append(f"{key}: {format_down(value, 2)}x")
    return "\n".join(lines)
