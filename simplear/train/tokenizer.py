"""Training loop for our FSQ autoencoder (`simplear train tokenizer`).

Written out top to bottom: sample a batch of images (freshly rendered ShapesWorld scenes, or a
JSONL / image folder loaded once), random-crop, reconstruct, L1 + MSE loss (no perceptual or
adversarial terms: ShapesWorld is flat colours and sharp edges, and pixel losses keep the run
cheap), AdamW with warm-up and cosine decay. Every `log_every` steps it logs loss, PSNR and the
fraction of the codebook used to the console and to `OUT/train/log.jsonl`; every
`checkpoint_every` steps it writes `OUT/train/checkpoint.pt` atomically, and a rerun with the same
config resumes from it. The result is a tokenizer folder (`OUT/config.json`,
`OUT/model.safetensors`) that `load_visual_tokenizer(OUT)` loads, plus `OUT/train_config.json`
and `OUT/eval.json` (held-out PSNR and codebook usage at each training resolution).

Training on crops of several resolutions is what makes one tokenizer serve both the low-res
pretraining and the high-res SFT of the AR model: the network is fully convolutional, so a 64 px
crop of a 128 px render teaches it the 128 px scale of objects, a 64 px render the 64 px scale.

An optional finishing phase (`finish_steps` > 0) follows the crop training in the same run: whole
images (no crop) at each of `finish_resolutions` in turn, an equal block of steps each, with its
own small learning rate (warm-up + cosine within every block) and edge weight. Whole small images
make each code carry a larger share of a shape; in docs/benchmarks.md such a finish lifted the
128-px round trip although it never saw a 128-px image, yet the AR models trained on the finished
tokenizers' codes scored lower, so only the `shapes-finish` recipe uses it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from simplear.train.tokenizer_data import make_image_source
from simplear.utils import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    autocast_factory,
    check_precision,
    pick_device,
    seed_everything,
    uses_bf16_autocast,
)
from simplear.visual_tokenizers.autoencoder import FSQAutoencoder, FSQAutoencoderConfig
from simplear.visual_tokenizers.images import uint8_to_float


@dataclass(frozen=True)
class TokenizerTrainConfig:
    """Everything a tokenizer training run depends on (saved as `OUT/train_config.json`)."""

    out: str = "runs/tokenizer"
    data: str = "shapes"  # "shapes" (render on the fly), a captions JSONL, or an image folder
    levels: tuple[int, ...] = (8, 5, 5, 5)
    downsample: int = 8
    channels: tuple[int, ...] = (32, 64, 128, 128)
    res_blocks: tuple[int, ...] = (0, 1, 1, 2)
    norm: str = "group"  # "group" | "pixel" (per-position statistics; see FSQAutoencoderConfig)
    # The decoder's own widths / depths (None: channels / res_blocks). With freeze_encoder and an
    # init_from of another decoder shape, the decoder starts fresh and init_from's encoder is kept.
    decoder_channels: tuple[int, ...] | None = None
    decoder_res_blocks: tuple[int, ...] | None = None
    resolutions: tuple[int, ...] = (64, 128)  # images are made at these sizes, in turn
    crop: int = 64  # random crop side fed to the network (0: whole image)
    batch_size: int = 32
    steps: int = 2000
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 1e-4
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    edge_weight: float = 0.0  # extra pixel weight near edges of the target (see `edge_weights`)
    grad_weight: float = 0.0  # weight of the gradient-difference loss (see `gradient_difference`)
    max_images: int = 5000  # cap for JSONL / folder data (loaded into memory once)
    eval_images: int = 256
    log_every: int = 50
    checkpoint_every: int = 250
    seed: int = 0
    device: str | None = None
    init_from: str | None = None  # start from this tokenizer folder's weights (same architecture)
    # Train the decoder only: the encoder (so every code it produces) stays exactly as init_from
    # made it, so token shards and AR models made with that tokenizer stay valid with the result.
    freeze_encoder: bool = False
    # Finishing phase after `steps` (see the module docstring); 0 steps: none.
    finish_steps: int = 0
    finish_resolutions: tuple[int, ...] = ()
    finish_lr: float = 2e-4
    finish_warmup: int = 20  # per block
    finish_edge_weight: float | None = None  # None: edge_weight
    # Training forward: "fp32" | "bf16" (autocast; weights, optimiser, FSQ rounding and the loss
    # stay float32) | "auto" (bf16 on CUDA and on CPUs with native bf16 matmuls). Evaluation,
    # encode and decode always run in float32.
    precision: str = "fp32"

    def __post_init__(self):
        for name in ("levels", "channels", "res_blocks", "resolutions", "finish_resolutions"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("decoder_channels", "decoder_res_blocks"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        for r in (*self.resolutions, *self.finish_resolutions):
            if r % self.downsample:
                raise ValueError(f"resolution {r} is not divisible by downsample {self.downsample}")
        check_precision(self.precision)
        if self.finish_steps < 0:
            raise ValueError("finish_steps must be >= 0")
        if self.finish_steps and len(self.finish_resolutions) > self.finish_steps:
            raise ValueError(f"finish_steps ({self.finish_steps}) must give each of the finish resolutions "
                             f"{list(self.finish_resolutions)} at least one step")
        if self.finish_steps and not self.finish_resolutions:
            raise ValueError("finish_steps needs finish_resolutions (the whole-image sizes of the finishing phase)")
        if self.freeze_encoder and not self.init_from:
            raise ValueError("freeze_encoder needs init_from: a random frozen encoder makes meaningless codes")
        if self.crop and (self.crop % self.downsample or self.crop > min(self.resolutions)):
            raise ValueError(f"crop {self.crop} must divide by {self.downsample} and be <= every resolution")
        self.model_config()  # validate the architecture early

    def model_config(self) -> FSQAutoencoderConfig:
        return FSQAutoencoderConfig(
            levels=self.levels, downsample=self.downsample, channels=self.channels, res_blocks=self.res_blocks,
            norm=self.norm, decoder_channels=self.decoder_channels, decoder_res_blocks=self.decoder_res_blocks,
        )

    @property
    def total_steps(self) -> int:
        return self.steps + self.finish_steps

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerTrainConfig:
        """A saved `train_config.json`; fields it predates take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# Named recipes: overrides of the defaults above. `shapes` is the tokenizer of the embedded default
# model (8 x 8 tokens at 64 px, 16 x 16 at 128 px; 2,560 codes); `shapes-d16` is the 16x variant
# (8 x 8 tokens at 128 px). Both are sized to train in about 20-25 minutes on a 2-core CPU.
# `shapes` uses batches of 8: at equal CPU time (samples seen), batch 8 x 1,000 steps reached
# 27.07 dB held-out at 128 px against 26.03 dB for 16 x 500 and 22.09 dB for 32 x 250 (the run is
# far from converged, so more optimiser updates beat less noisy ones). Star tips are the detail
# that fails first, and 1,000 codes were nearly all used, so the codebook is 2,560 ([8, 8, 8, 5]).
_SHAPES = {
    "data": "shapes",
    "levels": (8, 8, 8, 5),
    "downsample": 8,
    "channels": (32, 64, 128, 128),
    "res_blocks": (0, 1, 1, 2),
    "batch_size": 8,
    "steps": 4000,
    "warmup": 200,
    "edge_weight": 4.0,
    # Per-position normalisation: codes depend only on nearby pixels, so the AR model has less to
    # predict. Against GroupNorm in the same recipe (docs/benchmarks.md, recipe21 / recipe22): round
    # trips 0.987 / 0.678 at 128 / 64 px against 0.962 / 0.508, pretraining 0.242 against 0.142,
    # SFT 0.552 against 0.510; about 1.14x the training step time.
    "norm": "pixel",
}
RECIPES: dict[str, dict] = {
    "shapes": _SHAPES,
    # `shapes`, then 400 steps on whole 64-px images and 400 on whole 96-px ones (about 5.5 minutes
    # on the 2-core CPU): the best round trips (128 px: 0.963 in a recipe run, 0.943-0.962 without
    # the finish; 64 px 0.477 against 0.433), but the AR models trained on its codes scored lower
    # at every stage (0.236 after GRPO against 0.373, docs/benchmarks.md), so the ShapesWorld
    # recipe keeps `shapes`.
    "shapes-finish": {**_SHAPES, "norm": "group", "finish_steps": 800, "finish_resolutions": (64, 96), "finish_lr": 2e-4,
                      "finish_warmup": 20, "finish_edge_weight": 8.0},
    "shapes-d16": {
        "data": "shapes",
        "downsample": 16,
        "channels": (32, 64, 128, 128, 128),
        "res_blocks": (0, 1, 1, 1, 2),
        "crop": 64,
        "steps": 1200,
        "edge_weight": 4.0,
    },
}


def recipe_config(recipe: str | None, **overrides) -> TokenizerTrainConfig:
    """The named recipe's config with `overrides` (None values are ignored) applied on top."""
    base: dict = {}
    if recipe is not None:
        if recipe not in RECIPES:
            raise ValueError(f"unknown tokenizer recipe {recipe!r}; known: {', '.join(RECIPES)}")
        base = dict(RECIPES[recipe])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TokenizerTrainConfig(**base)


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (computed on the [0, 1] scale, clamped like a saved image)."""
    mse = F.mse_loss(reconstruction.clamp(-1, 1), target).item() / 4.0
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def edge_weights(images: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-pixel loss weights 1 + strength * (edge map in [0, 1]), B x 1 x H x W.

    Shapes are a few percent of a ShapesWorld image; the smooth background dominates a plain
    pixel loss. Weighting pixels within a pixel of a colour edge makes the boundaries, which
    decide the judged class and count, worth learning early. Still perceptual-free and cheap.
    """
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().amax(dim=1, keepdim=True)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().amax(dim=1, keepdim=True)
    edges = torch.zeros_like(images[:, :1])
    edges[..., :, 1:] = dx
    edges[..., 1:, :] = torch.maximum(edges[..., 1:, :], dy)
    # Steps below 0.15 (about 19 of 255 levels) are background noise and gradients; 0.5 counts fully.
    edges = ((F.max_pool2d(edges, 3, stride=1, padding=1) - 0.15) / 0.35).clamp(0.0, 1.0)
    return 1.0 + strength * edges


def gradient_difference(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the horizontal and vertical pixel differences of the two images.

    A pixel loss barely notices a star tip that is two pixels too short (a handful of pixels out of
    thousands); the difference images make every missing corner an edge that is absent, which
    costs as much as a misplaced boundary. Zero when the reconstruction is exact.
    """
    dx = (reconstruction[..., :, 1:] - reconstruction[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (reconstruction[..., 1:, :] - reconstruction[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def _warmup_cosine(step: int, length: int, lr: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine from lr down to lr / 10 at `length`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, length - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass(frozen=True)
class StepPlan:
    resolution: int
    crop: int
    lr: float
    edge_weight: float


def step_plan(step: int, cfg: TokenizerTrainConfig) -> StepPlan:
    """What training step `step` (0-based) does: the crop phase, then the finishing blocks."""
    if step < cfg.steps:
        return StepPlan(cfg.resolutions[step % len(cfg.resolutions)], cfg.crop,
                        _warmup_cosine(step, cfg.steps, cfg.lr, cfg.warmup), cfg.edge_weight)
    k = step - cfg.steps
    n = len(cfg.finish_resolutions)
    bounds = [i * cfg.finish_steps // n for i in range(n + 1)]  # block i is steps bounds[i] .. bounds[i+1]-1
    block = max(i for i in range(n) if bounds[i] <= k)
    start, end = bounds[block], bounds[block + 1]
    edge = cfg.edge_weight if cfg.finish_edge_weight is None else cfg.finish_edge_weight
    return StepPlan(cfg.finish_resolutions[block], 0,
                    _warmup_cosine(k - start, end - start, cfg.finish_lr, cfg.finish_warmup), edge)


def _random_crop(images: torch.Tensor, crop: int, gen: torch.Generator) -> torch.Tensor:
    if not crop or images.shape[-1] == crop:
        return images
    h, w = images.shape[-2:]
    out = torch.empty(images.shape[0], 3, crop, crop, dtype=images.dtype)
    ys = torch.randint(0, h - crop + 1, (images.shape[0],), generator=gen)
    xs = torch.randint(0, w - crop + 1, (images.shape[0],), generator=gen)
    for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist())):
        out[i] = images[i, :, y : y + crop, x : x + crop]
    return out


@torch.no_grad()
def evaluate_reconstruction(model, images: torch.Tensor, batch_size: int = 64) -> dict:
    """PSNR, MSE and codebook usage of `model` on uint8 images N x 3 x H x W (whole images)."""
    model.eval()
    device = next(model.parameters()).device
    se, count, codes_seen = 0.0, 0, set()
    for i in range(0, images.shape[0], batch_size):
        x = uint8_to_float(images[i : i + batch_size]).to(device)
        codes = model.encode(x)
        recon = model.decode(codes)
        se += F.mse_loss(recon, x, reduction="sum").item()
        count += x.numel()
        codes_seen.update(codes.unique().tolist())
    mse01 = se / count / 4.0
    return {
        "psnr": 10.0 * math.log10(1.0 / max(mse01, 1e-12)),
        "mse": se / count,
        "codebook_usage": len(codes_seen) / model.codebook_size,
        "codes_used": len(codes_seen),
        "images": int(images.shape[0]),
    }


def _truncate_log(path: Path, step: int) -> None:
    # Records written after the checkpoint belong to steps that are about to be redone.
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def train_tokenizer(cfg: TokenizerTrainConfig, log=print) -> dict:
    """Train (or resume) a tokenizer into `cfg.out`; returns the held-out evaluation dict."""
    # 1. Setup: folders, seeds, data, model, optimiser.
    out = Path(cfg.out)
    train_dir = out / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    source = make_image_source(cfg.data, max_images=cfg.max_images)
    model = FSQAutoencoder(cfg.model_config()).to(device)
    if cfg.freeze_encoder:
        model.encoder.requires_grad_(False)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if p.dim() > 1]
    no_decay = [p for n, p in trainable if p.dim() <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )
    if cfg.init_from is not None:
        start = FSQAutoencoder.from_pretrained(cfg.init_from)
        if start.config == model.config:
            model.load_state_dict(start.state_dict())
        elif cfg.freeze_encoder and start.config.encoder_part() == model.config.encoder_part():
            # A new decoder (another shape) for init_from's codes: take its encoder, start the decoder fresh.
            model.encoder.load_state_dict(start.encoder.state_dict())
            model.quantizer.load_state_dict(start.quantizer.state_dict())
            log(f"kept the encoder of {cfg.init_from}; the decoder ({model.config.dec_channels}, "
                f"{model.config.dec_res_blocks} residual blocks) starts from random weights")
        else:
            raise ValueError(f"--init-from {cfg.init_from} has another architecture ({start.config}) than this run "
                             f"({model.config}); only the decoder may differ, and only with --freeze-encoder")
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    autocast = autocast_factory(cfg.precision, device)
    step = 0

    # 2. Resume from the atomic checkpoint if this config already ran here.
    ckpt_path = train_dir / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        free = ("steps", "device", "out", "log_every", "checkpoint_every")  # these never change the weights
        saved = {k: v for k, v in TokenizerTrainConfig.from_dict(ckpt["config"]).to_dict().items() if k not in free}
        mine = {k: v for k, v in cfg.to_dict().items() if k not in free}
        if saved != mine:
            raise ValueError(f"{ckpt_path} was made with a different config; use a fresh --out or delete it")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["torch_gen"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        step = int(ckpt["step"])
        _truncate_log(train_dir / "log.jsonl", step)
        log(f"resumed from {ckpt_path} at step {step}")
    atomic_write_json(out / "train_config.json", cfg.to_dict())
    log(
        f"training FSQ tokenizer: {model.num_parameters() / 1e6:.2f}M parameters, codebook "
        f"{model.codebook_size}, downsample {cfg.downsample}, data {cfg.data!r}, device {device}, "
        f"autocast {'bf16' if uses_bf16_autocast(cfg.precision, device) else 'off'}"
    )

    def save_checkpoint() -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "config": cfg.to_dict(),
            "torch_gen": gen.get_state(),
            "numpy_rng": rng.bit_generator.state,
        }
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)

    # 3. The loop.
    log_path = train_dir / "log.jsonl"
    window = {"loss": 0.0, "psnr": 0.0, "n": 0}
    codes_seen: set[int] = set()
    t0 = time.time()
    model.train()
    total = cfg.total_steps
    while step < total:
        plan = step_plan(step, cfg)
        batch = source.batch(rng, plan.resolution, cfg.batch_size)
        batch = _random_crop(batch, plan.crop, gen)
        if torch.rand((), generator=gen) < 0.5:
            batch = batch.flip(-1)
        x = uint8_to_float(batch).to(device)
        for group in optimizer.param_groups:
            group["lr"] = plan.lr
        with autocast():
            recon, codes = model(x, frozen_encoder=cfg.freeze_encoder)
        recon = recon.float()
        diff = recon - x
        if plan.edge_weight:
            weights = edge_weights(x, plan.edge_weight)
            loss = (weights * (cfg.l1_weight * diff.abs() + cfg.mse_weight * diff.square())).mean() / weights.mean()
        else:
            loss = cfg.l1_weight * diff.abs().mean() + cfg.mse_weight * diff.square().mean()
        if cfg.grad_weight:
            loss = loss + cfg.grad_weight * gradient_difference(recon, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        window["loss"] += loss.item()
        window["psnr"] += psnr(recon.detach(), x)
        window["n"] += 1
        codes_seen.update(codes.unique().tolist())
        if step % cfg.log_every == 0 or step == total:
            n = window["n"]
            record = {
                "step": step,
                "loss": window["loss"] / n,
                "psnr": window["psnr"] / n,
                "codebook_usage": len(codes_seen) / model.codebook_size,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(time.time() - t0, 1),
            }
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            log(
                f"step {step}/{total} loss {record['loss']:.4f} psnr {record['psnr']:.2f} dB "
                f"usage {record['codebook_usage']:.3f} ({record['seconds']:.0f}s)"
            )
            window = {"loss": 0.0, "psnr": 0.0, "n": 0}
            codes_seen = set()
        if step % cfg.checkpoint_every == 0 or step == total:
            save_checkpoint()

    # 4. Save the tokenizer folder and evaluate it on held-out images at every resolution.
    model.eval()
    model.save_pretrained(out)
    heldout = make_image_source(cfg.data, max_images=cfg.max_images, heldout=True)
    results = {}
    eval_rng = np.random.default_rng(10_000 + cfg.seed)
    for resolution in dict.fromkeys((*cfg.resolutions, *cfg.finish_resolutions)):
        images = heldout.batch(eval_rng, resolution, cfg.eval_images)
        results[str(resolution)] = evaluate_reconstruction(model, images)
        r = results[str(resolution)]
        log(f"held-out {resolution}px: psnr {r['psnr']:.2f} dB, codebook usage {r['codebook_usage']:.3f}")
    report = {"steps": step, "train_seconds": round(time.time() - t0, 1), "heldout": results}
    atomic_write_json(out / "eval.json", report)
    return report
