"""`simplear recipe shapes --out DIR`: SimpleAR's three stages on ShapesWorld, in one command.

data (ShapesWorld images at the low and high resolution) -> visual tokenizer -> token shards ->
pretraining at the low resolution -> SFT at the high resolution -> GRPO with the judge's reward,
with an evaluation after each stage on the 553-prompt ShapesWorld suite (GenEval's protocol:
4 images per prompt, overall = mean over the six tags, held-out colour–class pairs reported
apart). Each stage is the library call its own CLI verb makes (`train_tokenizer`, `tokenize_dataset`,
`train_ar`, `train_grpo`); this file only wires folders together.

Folder layout (every stage resumable; a re-run continues where it stopped):
    DIR/recipe.json             the resolved RecipeConfig
    DIR/data/{low,low-val,high,high-val}/   ShapesWorld datasets (atomic folders)
    DIR/tokenizer/              FSQ visual tokenizer
    DIR/tokens/{...}/           token shards (resumable, manifest written last)
    DIR/pretrain/, DIR/sft/, DIR/grpo/      runs, each ending in bundle/
    DIR/stages/NAME.json        a stage's completion marker and its evaluation
    DIR/samples/NAME.png        the same prompts and seeds after each stage
    DIR/stages.json, DIR/stages.md          the stage table
A stage whose marker exists is skipped; an unfinished one resumes from its own checkpoints.
Devices: `device=None` picks CUDA when present, so the same command trains faster on a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simplear.utils import atomic_path, atomic_write_json, atomic_write_text, format_down

STAGES = ("data", "tokenizer", "tokens", "pretrain", "sft", "grpo")
# Fixed prompts for the per-stage sample grids (the model card's picture).
GRID_PROMPTS = (
    "a photo of a red circle",
    "a photo of two blue squares",
    "a photo of a star and a heart",
    "a photo of a cross left of a triangle",
    "a photo of a purple star and an orange triangle",
    "a photo of three green hearts",
)


# Fields whose default changed what the recipe does: the value a run made before the field
# existed implicitly used (recipe.json files without the key are read with these).
LEGACY = {"data_background": "textured", "data_grid": 0, "data_caption_order": "given", "snap_background": False}
# Fields that only change how stages are evaluated and whose defaults have changed since runs were
# made with the old ones: continuing such a run uses the values in its recipe.json (run_recipe).
KEEP_ON_RESUME = ("eval_batch_size", "tune_sampling", "tune_prompts")


def _from_json(name: str, value):
    """A recipe.json value as the RecipeConfig field holds it (JSON turns tuples into lists)."""
    if name == "tune_sampling":
        return tuple(tuple(float(x) for x in pair) for pair in value)
    return value


@dataclass(frozen=True)
class RecipeConfig:
    """The whole recipe. The defaults are the full CPU run; `smoke_config` is a seconds-long one."""

    out: str
    device: str | None = None
    seed: int = 0
    low_resolution: int = 64  # pretraining images (8x8 codes with the 8x tokenizer)
    high_resolution: int = 128  # SFT, GRPO and evaluation images (16x16 codes)
    pretrain_images: int = 40_000
    sft_images: int = 20_000
    val_images: int = 512
    # How the pretraining and SFT scenes are drawn (simplear.data.shapes.ShapesConfig): a plain
    # grey background and boxes on the 16 x 16 token grid of the 128-px images, so the model's
    # capacity goes to shapes, counts and layout instead of background noise and sub-token
    # offsets. The tokenizer still trains, and the suite is still judged, on textured scenes.
    data_background: str = "plain"
    data_grid: int = 16
    # How the training captions order a scene's clauses (ShapesConfig.caption_order).
    data_caption_order: str = "given"
    # The SFT scenes' tag mix ({tag: weight}, ShapesConfig.tag_weights); empty: GenEval's
    # proportions, like the pretraining, validation and evaluation scenes.
    sft_tag_weights: dict = dataclasses.field(default_factory=dict)
    tokenizer_recipe: str = "shapes"
    # A trained visual tokenizer folder to use instead of training one (copied into DIR/tokenizer,
    # then judged like a trained one); tokenizer_recipe/tokenizer_overrides are then unused.
    tokenizer_from: str | None = None
    tokenizer_overrides: dict = dataclasses.field(default_factory=dict)  # TokenizerTrainConfig fields
    # Token shards give the plain background's flat patches away from objects one code
    # (`TokenizeConfig.snap_color`, radius 1). None: when data_background is "plain" (True needs it).
    # With the same tokenizer and steps, SFT judged 0.482 with it and 0.409 without (docs/benchmarks.md).
    snap_background: bool | None = None
    pretrain_overrides: tuple[str, ...] = ()  # key=value for the shapes-pretrain TrainConfig
    sft_overrides: tuple[str, ...] = ()  # key=value for the shapes-sft TrainConfig
    grpo_overrides: dict = dataclasses.field(default_factory=dict)  # GRPOConfig fields
    eval_num_prompts: int = 0  # 0 = the whole 553-prompt suite
    eval_images_per_prompt: int = 4
    # Images per sampler call in the evaluations and the sampling sweep: on the 2-core CPU the
    # fast engine draws a 128-px image in 0.073-0.082 s at batch 128 against 0.102-0.110 s at 32.
    eval_batch_size: int = 128
    # After SFT: judge each (CFG scale, temperature) pair on `tune_prompts` prompts of another suite
    # draw (make_suite(seed=1), other image seeds) and store the best as the bundle's defaults, which
    # the SFT evaluation, GRPO's rollouts and the shipped model then use. Empty: keep the trainer's.
    # Temperature 0.7 only: in all five plain-scene recipe runs a T 0.7 pair won over every T 1.0 one,
    # and colder sampling scored lower still (docs/benchmarks.md); the CFG scale is what varied.
    tune_sampling: tuple[tuple[float, float], ...] = ((2.0, 0.7), (3.0, 0.7), (5.0, 0.7), (8.0, 0.7))
    # 384 prompts (64 per tag): on 96 the sweep rated CFG 3.0 above 2.0 for a model that the full
    # suite judged 0.250 at 3.0 and 0.371 at 2.0; 384 rated them 0.236 and 0.385, in 141 s
    # (2026-11-24, docs/benchmarks.md).
    tune_prompts: int = 384
    until: str = "grpo"  # stop after this stage

    def __post_init__(self):
        if self.until not in STAGES:
            raise ValueError(f"until must be one of {STAGES}, got {self.until!r}")
        if self.high_resolution <= self.low_resolution:
            raise ValueError("high_resolution must exceed low_resolution (pretrain low, SFT high)")
        for name in ("pretrain_images", "sft_images", "val_images", "eval_images_per_prompt", "eval_batch_size",
                     "tune_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        from simplear.data.shapes import ShapesConfig

        ShapesConfig(background=self.data_background, grid=self.data_grid,
                     caption_order=self.data_caption_order)  # raises on bad values
        if self.sft_tag_weights:
            ShapesConfig(tag_weights=tuple(self.sft_tag_weights.items()))  # raises on bad tags or weights
        if self.snap_background is True and self.data_background != "plain":
            raise ValueError(f"snap_background needs data_background 'plain' (one background colour), "
                             f"got {self.data_background!r}")
        for pair in self.tune_sampling:
            if len(pair) != 2 or pair[0] < 1.0 or pair[1] <= 0:
                raise ValueError(f"tune_sampling holds (cfg_scale >= 1, temperature > 0) pairs, got {pair!r}")


def grpo_defaults() -> dict:
    """GRPO settings of the full recipe, sized for what is left of the 2-hour CPU budget after
    pretraining and SFT (32 images of 256 tokens per step, about 11 s each on the idle 2-core
    CPU); on a GPU raise prompts_per_step/steps. lr 3e-5 with β 0.05: from the plain-grid SFT model,
    lr 1e-4 / β 0.02 blew the KL up in its first step (k3 estimate 2.2e5) and ended 0.004 below SFT,
    while lr 3e-5 / β 0.05 kept KL near 0.1 and ended +0.031 above it (docs/benchmarks.md). The
    reward mixes the judge's strict verdict with its partial credit, which still ranks the images
    of a group in which none is fully right, both in their `exact` form (nothing but what the prompt
    names): with GenEval's own rules, which check excess objects only on counting prompts, GRPO
    learned to draw extra objects and counting fell (recipe22: 0.437 -> 0.312, overall +0.014);
    with `exact` counting rose to 0.725 and overall by +0.071 from the same SFT bundle. From an
    earlier shipped SFT model minibatches of 16 or lr 5e-5 did not beat these, and a 5-step warm-up scored lower (two seeds).
    One optimisation pass per rollout batch (the plain policy gradient plus KL) scored as well as
    two at 40 steps (0.387 and 0.383 against 0.373) in about a fifth less time per step, and the
    time saved pays for 50 steps instead of 40: 0.399 and 0.388 (two seeds) in about the same
    551-585 s of steps. From the 2,800-step SFT bundle (CFG 2.0) 100 steps judged 0.465 against
    0.444 at 50, and 150 / 200 no better than 100 (0.462 / 0.472); the shipped model's GRPO
    stage ran 100 (2026-11-24, docs/benchmarks.md). About 10 s per step on that CPU."""
    return {"steps": 100, "prompts_per_step": 4, "group_size": 8, "passes": 1, "lr": 3e-5, "beta": 0.05,
            "clip_eps": 0.2, "eval_every": 10, "eval_num_prompts": 48, "checkpoint_every": 5,
            "micro_batch_size": 16, "rollout_batch_size": 32, "reward": "0.5*shapes:exact+0.5*shapes:exact-partial",
            "bundle_dtype": "bfloat16"}


def snaps_background(snap_background: bool | None, data_background: str) -> bool:
    """Whether a recipe with these settings snaps background codes (None: when the background is plain)."""
    return data_background == "plain" if snap_background is None else snap_background


def smoke_config(out: str, device: str | None = None) -> RecipeConfig:
    """A tiny end-to-end configuration (seconds per stage on a CPU) for tests and dry runs."""
    tiny_ar = ("model.preset=tiny", "batch_size=8", "micro_batch_size=8", "max_steps=3", "checkpoint_every=2",
               "log_every=1", "eval.every=0", "eval.samples=false", "eval.val_batches=1", "progress=false",
               "optim.warmup_steps=0", "data.text_vocab_size=300")
    return RecipeConfig(
        out=out, device=device, low_resolution=32, high_resolution=64, pretrain_images=32, sft_images=32,
        val_images=8,
        tokenizer_overrides={"steps": 4, "batch_size": 4, "channels": (8, 16, 16, 16), "res_blocks": (0, 0, 0, 0),
                             "crop": 32, "eval_images": 8, "log_every": 2, "checkpoint_every": 2,
                             "levels": (4, 4), "finish_steps": 2, "finish_resolutions": (32,)},
        pretrain_overrides=(*tiny_ar, "model.context=160"),
        sft_overrides=(*tiny_ar, "model.context=192"),
        grpo_overrides={"steps": 2, "prompts_per_step": 2, "group_size": 2, "passes": 1, "eval_every": 0,
                        "checkpoint_every": 1, "micro_batch_size": 4, "progress": False},
        eval_num_prompts=6, eval_images_per_prompt=1, eval_batch_size=8,
        tune_sampling=((2.0, 1.0), (3.0, 0.7)), tune_prompts=4,
    )


# ---- stages ----------------------------------------------------------------------------------


def _data(cfg: RecipeConfig, root: Path) -> dict:
    from simplear.data.shapes import ShapesConfig
    from simplear.data.shapes_dataset import ShapesDatasetConfig, write_shapes_dataset

    sets = {"low": (cfg.pretrain_images, cfg.low_resolution, 0), "low-val": (cfg.val_images, cfg.low_resolution, 1),
            "high": (cfg.sft_images, cfg.high_resolution, 2), "high-val": (cfg.val_images, cfg.high_resolution, 3)}
    for name, (num, resolution, offset) in sets.items():
        folder = root / "data" / name
        if (folder / "config.json").is_file():
            continue  # written whole by an atomic folder rename: complete
        seed = cfg.seed * 10 + offset  # different images in every set
        shapes = ShapesConfig(background=cfg.data_background, grid=cfg.data_grid, caption_order=cfg.data_caption_order)
        if name == "high" and cfg.sft_tag_weights:
            shapes = dataclasses.replace(shapes, tag_weights=tuple(cfg.sft_tag_weights.items()))
        write_shapes_dataset(folder, ShapesDatasetConfig(num=num, resolution=resolution, seed=seed, shapes=shapes),
                             overwrite=True)
    return {"sets": {k: v[0] for k, v in sets.items()}}


def _tokenizer(cfg: RecipeConfig, root: Path) -> dict:
    from simplear.train.tokenizer import recipe_config, train_tokenizer
    from simplear.train.tokenizer_eval import TokenizerEvalConfig, evaluate_tokenizer

    source = {}
    if cfg.tokenizer_from:
        source = _copy_tokenizer(cfg, root / "tokenizer")
    else:
        overrides = {"resolutions": (cfg.low_resolution, cfg.high_resolution), "seed": cfg.seed,
                     "device": cfg.device, **cfg.tokenizer_overrides}
        tcfg = recipe_config(cfg.tokenizer_recipe, out=str(root / "tokenizer"), **overrides)
        saved = root / "tokenizer" / "train_config.json"
        if saved.is_file() and (root / "tokenizer" / "train" / "checkpoint.pt").is_file():
            # Like the AR stages: an interrupted tokenizer continues with the settings it started
            # with, even where the named tokenizer recipe's defaults changed since.
            from simplear.train.tokenizer import TokenizerTrainConfig

            started = dataclasses.replace(TokenizerTrainConfig.from_dict(json.loads(saved.read_text())),
                                          device=cfg.device, out=tcfg.out)
            if started != tcfg:
                print(f"recipe: tokenizer continues with the settings it started with ({saved})", flush=True)
                tcfg = started
        train_tokenizer(tcfg)
    report = evaluate_tokenizer(TokenizerEvalConfig(
        tokenizer=str(root / "tokenizer"), resolutions=(cfg.low_resolution, cfg.high_resolution),
        num_images=cfg.eval_num_prompts or 553, device=cfg.device))
    high = report["resolutions"][str(cfg.high_resolution)]
    # The round-trip score is the ceiling of every later stage (a model cannot beat its tokenizer).
    return {"eval": {"overall": high["judge_accuracy_roundtrip"], "partial": high["judge_score_roundtrip"],
                     "psnr": high["psnr"], "images": report["prompts"], "kind": "round-trip of ground truth"},
            "report": report, **source}


def _copy_tokenizer(cfg: RecipeConfig, dest: Path) -> dict:
    """Copy the tokenizer folder `cfg.tokenizer_from` to `dest` (atomically, whole) after checking
    that it loads and that its downsampling divides both recipe resolutions."""
    import shutil

    from simplear.utils import atomic_dir
    from simplear.visual_tokenizers import load_visual_tokenizer

    src = Path(cfg.tokenizer_from)
    tokenizer = load_visual_tokenizer(src)  # clear errors for a missing or foreign folder
    for res in (cfg.low_resolution, cfg.high_resolution):
        if res % tokenizer.downsample:
            raise ValueError(f"tokenizer {src} downsamples by {tokenizer.downsample}, which does not divide the "
                             f"recipe resolution {res}")
    with atomic_dir(dest) as tmp:  # replaces a half-written copy whole
        for item in src.iterdir():
            if item.is_file():  # weights and config; not a training run's checkpoints
                shutil.copy2(item, tmp / item.name)
    return {"copied_from": str(src), "sha256": tokenizer.fingerprint()}


def _tokens(cfg: RecipeConfig, root: Path) -> dict:
    from simplear.data.shapes import PLAIN_BACKGROUND
    from simplear.data.shards import TokenizeConfig, tokenize_dataset

    snap = snaps_background(cfg.snap_background, cfg.data_background)
    snap_color = tuple(round(c) for c in PLAIN_BACKGROUND) if snap else None
    counts = {}
    for name, resolution in (("low", cfg.low_resolution), ("low-val", cfg.low_resolution),
                             ("high", cfg.high_resolution), ("high-val", cfg.high_resolution)):
        manifest = tokenize_dataset(TokenizeConfig(
            data=str(root / "data" / name / "captions.jsonl"), tokenizer=str(root / "tokenizer"),
            out=str(root / "tokens" / name), resolution=resolution, device=cfg.device, snap_color=snap_color))
        counts[name] = manifest["count"] if manifest else None
    return {"counts": counts}


def _ar_stage(cfg: RecipeConfig, root: Path, name: str) -> dict:
    from simplear.train.ar import train_ar
    from simplear.train.config import recipe

    low = name == "pretrain"
    res = cfg.low_resolution if low else cfg.high_resolution
    split = "low" if low else "high"
    paths = [f"data.shards={root / 'tokens' / split}", f"data.val_shards={root / 'tokens' / (split + '-val')}",
             f"data.visual_tokenizer={root / 'tokenizer'}", f"data.resolution={res}", f"seed={cfg.seed}"]
    if cfg.device:
        paths.append(f"device={cfg.device}")
    if not low:
        paths.append(f"model.init_from={root / 'pretrain' / 'bundle'}")
    overrides = paths + list(cfg.pretrain_overrides if low else cfg.sft_overrides)
    config = recipe("shapes-pretrain" if low else "shapes-sft", overrides)
    run = root / name
    saved = run / "config.json"
    if saved.is_file():
        # An interrupted stage continues as it started, even where the named recipe's defaults
        # have changed since (e.g. the SFT batch, 32 until 2026-11-23); the recipe's own settings
        # (recipe.json) are checked already, so only such defaults can differ here.
        from simplear.train.config import TrainConfig

        started = dataclasses.replace(TrainConfig.from_dict(json.loads(saved.read_text())), device=config.device)
        if started.to_dict() != config.to_dict():
            print(f"recipe: {name} continues with the settings it started with ({saved})", flush=True)
            config = started
    train_ar(config, run, resume=saved.is_file())
    return {"bundle": str(run / "bundle"), "resolution": res}


# GRPOConfig fields that `_grpo` sets from the recipe itself, so grpo_overrides cannot hold them.
GRPO_FIELDS_SET_BY_RECIPE = ("init_from", "out", "device", "seed", "resume")
# The tokenizer stage's fields the recipe sets itself (--tokenizer-set may change the others).
TOKENIZER_FIELDS_SET_BY_RECIPE = ("out", "resolutions", "seed", "device")


def grpo_fields(cfg: RecipeConfig, root: Path) -> dict:
    """The GRPO stage's settings: `grpo_defaults()` under the run's overrides. A stage that was
    interrupted (it has checkpoints) continues with the settings it started with where the
    defaults have changed since, like the tokenizer stage."""
    fields = {**grpo_defaults(), **cfg.grpo_overrides}
    saved = root / "grpo" / "config.json"
    if saved.is_file() and any((root / "grpo" / "checkpoints").glob("step-*")):
        started = json.loads(saved.read_text())
        kept = {k: started[k] for k in fields if k not in cfg.grpo_overrides and k in started
                and started[k] != fields[k]}
        if kept:
            print(f"recipe: grpo continues with the settings it started with ({', '.join(sorted(kept))})", flush=True)
            fields.update(kept)
    return fields


def _grpo(cfg: RecipeConfig, root: Path) -> dict:
    from simplear.train.grpo import GRPOConfig, train_grpo

    fields = grpo_fields(cfg, root)
    gcfg = GRPOConfig(init_from=str(root / "sft" / "bundle"), out=str(root / "grpo"), device=cfg.device,
                      seed=cfg.seed, resume=True, **fields)
    summary = train_grpo(gcfg)
    return {"bundle": str(root / "grpo" / "bundle"), "resolution": cfg.high_resolution, "summary": summary}


RUNNERS: dict[str, Callable[[RecipeConfig, Path], dict]] = {
    "data": _data,
    "tokenizer": _tokenizer,
    "tokens": _tokens,
    "pretrain": lambda cfg, root: _ar_stage(cfg, root, "pretrain"),
    "sft": lambda cfg, root: _ar_stage(cfg, root, "sft"),
    "grpo": _grpo,
}


# ---- evaluation, grids, the table -------------------------------------------------------------


def tune_sampling(cfg: RecipeConfig, bundle_path: str) -> dict:
    """Pick the bundle's default (CFG scale, temperature) by the judge, and write it into the bundle.

    Each candidate pair is judged on `cfg.tune_prompts` prompts of a different suite draw than
    the evaluation's, with other image seeds; the best overall (then partial credit) wins. No
    top-k/top-p: GRPO optimises the full guided distribution, so the defaults stay untruncated.
    """
    from simplear.bundle import BUNDLE_FILE, load_bundle
    from simplear.eval.suite import make_suite
    from simplear.sampling.config import SamplingConfig
    from simplear.train.suite_eval import evaluate_bundle, spread

    bundle = load_bundle(bundle_path, device=cfg.device)
    bundle.model.eval()
    prompts = spread(make_suite(seed=1), cfg.tune_prompts)
    rows = []
    for cfg_scale, temperature in cfg.tune_sampling:
        sampling = SamplingConfig(cfg_scale=float(cfg_scale), temperature=float(temperature))
        result = evaluate_bundle(bundle, prompts, images_per_prompt=1, seed=cfg.seed + 101, sampling=sampling,
                                 batch_size=cfg.eval_batch_size)
        rows.append({"cfg_scale": float(cfg_scale), "temperature": float(temperature),
                     "overall": result["overall"], "partial": result["partial"], "tags": result["tags"]})
    best = max(rows, key=lambda r: (r["overall"], r["partial"]))
    path = Path(bundle_path) / BUNDLE_FILE
    data = json.loads(path.read_text())
    data["sampling"] = {**data.get("sampling", {}), "cfg_scale": best["cfg_scale"],
                        "temperature": best["temperature"], "top_k": None, "top_p": None}
    atomic_write_json(path, data)
    return {"prompts": len(prompts), "candidates": rows,
            "chosen": {"cfg_scale": best["cfg_scale"], "temperature": best["temperature"]}}


def evaluate_stage(cfg: RecipeConfig, bundle_path: str, root: Path, name: str) -> dict:
    """Judge the stage's saved bundle (exactly what ships) on the suite, and draw its sample grid."""
    from simplear.bundle import load_bundle
    from simplear.eval.suite import make_suite
    from simplear.train.ar_eval import image_grid
    from simplear.train.suite_eval import evaluate_bundle, generate_codes, spread
    from simplear.visual_tokenizers.images import tensor_to_pil

    bundle = load_bundle(bundle_path, device=cfg.device)
    bundle.model.eval()
    suite = spread(make_suite(seed=0), cfg.eval_num_prompts)
    result = evaluate_bundle(bundle, suite, images_per_prompt=cfg.eval_images_per_prompt, seed=cfg.seed,
                             batch_size=cfg.eval_batch_size)
    result["sampling"] = bundle.config.sampling.to_dict()
    result["image_size"] = bundle.config.image_size
    prompts = [p for p in GRID_PROMPTS for _ in range(4)]
    codes = generate_codes(bundle, prompts, seed=cfg.seed, batch_size=cfg.eval_batch_size)
    grid = image_grid(tensor_to_pil(bundle.visual_tokenizer.decode(codes)), columns=4)
    with atomic_path(root / "samples" / f"{name}.png") as tmp:
        grid.save(tmp, format="PNG")
    return result


def stage_table(results: dict) -> tuple[list[dict], str]:
    """Rows (stage, overall, tags, held-out, seen) and the same as a markdown table."""
    from simplear.eval.judge import TAGS

    rows = []
    for name in STAGES:
        ev = results.get(name, {}).get("eval")
        if not ev:
            continue
        rows.append({"stage": name, "overall": ev.get("overall"), "tags": ev.get("tags", {}),
                     "heldout": (ev.get("heldout") or {}).get("overall"), "seen": (ev.get("seen") or {}).get("overall"),
                     "images": ev.get("images"), "seconds": results[name].get("seconds")})
    head = "| stage | overall | " + " | ".join(TAGS) + " | held-out | seen | images | train+eval s |"
    lines = [head, "|" + "---|" * (len(TAGS) + 6)]

    def fmt(v):
        return "–" if v is None else format_down(v, 3) if isinstance(v, float) else str(v)

    for r in rows:
        cells = [r["stage"], fmt(r["overall"])] + [fmt(r["tags"].get(t)) for t in TAGS]
        cells += [fmt(r["heldout"]), fmt(r["seen"]), fmt(r["images"]), fmt(r["seconds"] and int(r["seconds"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return rows, "\n".join(lines) + "\n"


def check_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, each with the measured figure and whether it is met (None: not run yet).

    SFT >= 0.80; GRPO >= SFT + 0.05 and >= 0.90 with no tag below 0.75; held-out pairs within
    0.10 of the rest (GRPO stage).
    """
    by = {r["stage"]: r for r in rows}
    sft, grpo = by.get("sft", {}), by.get("grpo", {})

    def target(name, value, ok):
        return {"target": name, "value": value, "met": None if value is None else bool(ok)}

    s, g = sft.get("overall"), grpo.get("overall")
    worst = min(grpo["tags"].values()) if grpo.get("tags") else None
    gap = None if grpo.get("heldout") is None or grpo.get("seen") is None else grpo["seen"] - grpo["heldout"]
    return [
        target("sft overall >= 0.80", s, s is not None and s >= 0.80),
        target("grpo overall >= sft + 0.05", None if s is None or g is None else g - s,
               s is not None and g is not None and g >= s + 0.05),
        target("grpo overall >= 0.90", g, g is not None and g >= 0.90),
        target("grpo: no tag below 0.75", worst, worst is not None and worst >= 0.75),
        target("grpo: held-out within 0.10 of the rest", gap, gap is not None and abs(gap) <= 0.10),
    ]


def _target_line(t: dict) -> str:
    value = "not run" if t["value"] is None else format_down(t["value"], 3)
    verdict = "–" if t["met"] is None else "met" if t["met"] else "NOT met"
    return f"- {t['target']}: {value} ({verdict})\n"


# ---- the driver ------------------------------------------------------------------------------


def run_recipe(cfg: RecipeConfig, log: Callable[[str], None] = print, command: str | None = None) -> dict:
    """Run (or continue) every stage up to `cfg.until`; returns {stage: marker dict}.

    Ends by writing the model card (`DIR/MODEL_CARD.md`, see `model_card`); `command` is the
    command line it quotes (default: the plain `simplear recipe shapes --out DIR`).
    """
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    saved = root / "recipe.json"
    mine = json.loads(json.dumps(dataclasses.asdict(cfg)))
    if saved.is_file():
        before = json.loads(saved.read_text())
        defaults = json.loads(json.dumps(dataclasses.asdict(RecipeConfig(out=cfg.out))))
        # A field added after the run started is unchanged when it holds the value that matches
        # what the run did before the field existed (its default, unless listed in LEGACY).
        defaults.update(LEGACY)
        # Evaluation settings whose defaults changed: a continued run keeps the ones it started with,
        # so its stages stay comparable with each other.
        kept = {k: before[k] for k in KEEP_ON_RESUME if k in before and before[k] != mine[k]}
        if kept:
            log(f"recipe: continuing with this run's own {', '.join(sorted(kept))}")
            cfg = dataclasses.replace(cfg, **{k: _from_json(k, v) for k, v in kept.items()})
            mine = json.loads(json.dumps(dataclasses.asdict(cfg)))
        changed = sorted(k for k in mine if k not in ("until", "device")
                         and before.get(k, defaults[k]) != mine[k])
        if changed:
            raise ValueError(f"{root} holds a recipe run with other settings ({', '.join(changed)}); "
                             "use another --out or the same settings")
    atomic_write_json(saved, mine)
    results: dict = {}
    for name in STAGES:
        marker = root / "stages" / f"{name}.json"
        if marker.is_file():
            results[name] = json.loads(marker.read_text())
            log(f"recipe: {name} done earlier, skipped")
        else:
            log(f"recipe: stage {name}")
            started = time.perf_counter()
            info = RUNNERS[name](cfg, root)
            if name == "sft" and cfg.tune_sampling:
                info["sampling_sweep"] = tune_sampling(cfg, info["bundle"])
                chosen = info["sampling_sweep"]["chosen"]
                log(f"recipe: sampling defaults cfg_scale {chosen['cfg_scale']} temperature {chosen['temperature']}")
            if "bundle" in info:
                info["eval"] = evaluate_stage(cfg, info["bundle"], root, name)
            info["seconds"] = time.perf_counter() - started
            atomic_write_json(marker, info)  # written last: the stage is complete
            results[name] = info
        if "eval" in results[name]:
            ev = results[name]["eval"]
            log(f"recipe: {name} overall {format_down(ev['overall'], 4)}")
        if name == cfg.until:
            break
    rows, markdown = stage_table(results)
    targets = check_targets(rows)
    markdown += "\n" + "".join(_target_line(t) for t in targets)
    atomic_write_json(root / "stages.json", {"stages": rows, "targets": targets})
    atomic_write_text(root / "stages.md", markdown)
    log(markdown)
    from simplear.train.model_card import write_model_card

    card = write_model_card(root, command or f"simplear recipe shapes --out {cfg.out}")
    log(f"recipe: model card {card}")
    return results
