"""Rejection sampling: a model's own images that a verifiable reward accepts, as token shards.

For each training prompt, draw K images from a bundle at its sampling settings, score them with
a reward (`simplear.rewards`, e.g. the judge's `shapes:exact`), and keep those scoring at least a
threshold, at most KEEP per prompt so easy prompts do not crowd out hard ones. The kept codes,
captioned with their prompt, are written as a token shard folder that `simplear train ar` reads
(`data.shards=OUT`): fine-tuning on them is rejection-sampling fine-tuning (expert iteration;
RAFT, Dong et al., arXiv 2304.06767), the simplest use of a verifiable reward beside GRPO.

Why it helps an AR image model: the model learns to continue from prefixes it drew itself (its
own first object, say) rather than only from the data's, and only along continuations that came
out right. It is not GRPO: nothing pushes down on the rejected images, and there is no KL term;
the kept rows can be mixed with the original SFT shards to stay near the data.

Output folder, read like any token shard folder (`simplear.data.shards`):
- `rejection.json`: the run's identity (the model's and tokenizer's weight hashes, the settings),
  written first, so a rerun with another model or other settings into the same folder is refused;
- per shard of `prompts_per_shard` prompts: `shard-NNNNN.npy` (kept codes), `.jsonl` (one row
  per kept image: `captions` = [prompt], `metadata`, `reward`, `prompt_index`), and `.json`
  (row count and what was drawn and accepted per tag) written last, so a rerun skips finished
  shards: a killed run resumes where it stopped. Each shard's draws depend only on the seed and
  the shard's index, so a resumed run writes the same rows as an uninterrupted one;
- `manifest.json`, last: tokenizer identity, resolution, grid, the settings, and acceptance per tag.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simplear.data.shards import build_manifest, code_dtype, shard_name
from simplear.utils import atomic_path, atomic_write_json, atomic_write_text, state_sha256


@dataclass(frozen=True)
class RejectionConfig:
    bundle: str  # the model bundle to draw from (its sampling defaults unless overridden)
    out: str  # new shard folder (or one this config started: it resumes)
    prompts: str | None = None  # GenEval-schema JSONL; None = ShapesWorld's training pool (no held-out pairs)
    num_prompts: int = 1024  # prompts drawn from the ShapesWorld pool (a prompt file: all its lines)
    images_per_prompt: int = 4
    keep_per_prompt: int = 2  # accepted images kept per prompt at most
    reward: str = "shapes:exact"  # a reward spec (simplear.rewards.build_reward)
    threshold: float = 1.0  # an image is accepted when its reward is >= this
    seed: int = 7  # prompt pool and sampling seed
    cfg_scale: float | None = None  # None: the bundle's default
    temperature: float | None = None
    batch_size: int = 64  # images per sampler call
    prompts_per_shard: int = 256
    device: str | None = None

    def __post_init__(self):
        for name in ("num_prompts", "images_per_prompt", "keep_per_prompt", "batch_size", "prompts_per_shard"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.keep_per_prompt > self.images_per_prompt:
            raise ValueError(f"keep_per_prompt ({self.keep_per_prompt}) cannot exceed images_per_prompt "
                             f"({self.images_per_prompt})")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {self.threshold}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {self.temperature}")
        if self.cfg_scale is not None and not math.isfinite(self.cfg_scale):
            raise ValueError(f"cfg_scale must be a finite number, got {self.cfg_scale}")

    def to_dict(self) -> dict:
        return asdict(self)


def accept(values: np.ndarray, images_per_prompt: int, keep_per_prompt: int, threshold: float) -> list[int]:
    """Indices of the kept images: per prompt (consecutive groups of K), the first accepted ones.

    Pure function of the rewards: `values` holds K rewards per prompt, prompt after prompt.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) % images_per_prompt:
        raise ValueError(f"expected {images_per_prompt} rewards per prompt, got {values.shape}")
    kept = []
    for start in range(0, len(values), images_per_prompt):
        group = [start + j for j in range(images_per_prompt) if values[start + j] >= threshold]
        kept += group[:keep_per_prompt]
    return kept


def prompt_pool(config: RejectionConfig) -> list[dict]:
    """The prompts (GenEval metadata lines with `prompt`): the file's, or GRPO's ShapesWorld pool."""
    from simplear.train.grpo import GRPOConfig
    from simplear.train.grpo_prompts import training_prompts

    pool = training_prompts(GRPOConfig(seed=config.seed, prompts=config.prompts), pool_size=config.num_prompts)
    if not pool:
        raise ValueError(f"{config.prompts} holds no prompts")
    return pool


def _identity(config: RejectionConfig, bundle, tokenizer: dict) -> dict:
    keep = {k: v for k, v in config.to_dict().items() if k not in ("bundle", "out", "device", "batch_size")}
    # Weight hashes name the model and the tokenizer: their paths may change between a run and its
    # resume, and a bundle retrained in place must not add its samples to the old one's.
    return {"format": "simplear-rejection-samples", "version": 1, **keep,
            "model_sha256": state_sha256(bundle.model),
            "visual_tokenizer": {k: v for k, v in tokenizer.items() if k != "path"}}


def _check_identity(out: Path, identity: dict) -> None:
    path = out / "rejection.json"
    if path.is_file():
        theirs = json.loads(path.read_text())
        if theirs != identity:
            diff = sorted(k for k in set(theirs) | set(identity) if theirs.get(k) != identity.get(k))
            raise ValueError(f"{out} holds rejection samples made with other settings ({', '.join(diff)}); "
                             "give a new --out folder")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not a rejection-sample folder; give a new --out folder")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, identity)


def _sampling(config: RejectionConfig, bundle):
    from simplear.sampling.config import SamplingConfig

    sampling = bundle.config.sampling.to_dict()
    for key in ("cfg_scale", "temperature"):
        if getattr(config, key) is not None:
            sampling[key] = getattr(config, key)
    return SamplingConfig.from_dict(sampling)


def _draw_shard(k: int, items: list[dict], config: RejectionConfig, bundle, reward, sampling, out: Path,
                first: int) -> dict:
    """Draw, score and keep the images of prompts [first, first + len(items)); write shard k."""
    from simplear.train.suite_eval import generate_codes
    from simplear.visual_tokenizers.images import tensor_to_pil

    K = config.images_per_prompt
    draws = [m for m in items for _ in range(K)]
    prompts = [m["prompt"] for m in draws]
    codes = generate_codes(bundle, prompts, seed=config.seed * 1_000_003 + k, sampling=sampling,
                           batch_size=config.batch_size)
    values = []
    with torch.inference_mode():
        for start in range(0, len(draws), config.batch_size):
            images = tensor_to_pil(bundle.visual_tokenizer.decode(codes[start : start + config.batch_size]))
            chunk = draws[start : start + config.batch_size]
            values += torch.as_tensor(reward(images, [m["prompt"] for m in chunk], chunk)).float().tolist()
    kept = accept(np.array(values), K, config.keep_per_prompt, config.threshold)
    rows = [{"line": first + i // K, "captions": [draws[i]["prompt"]], "metadata": draws[i],
             "reward": values[i], "prompt_index": first + i // K} for i in kept]
    name = shard_name(k)
    with atomic_path(out / f"{name}.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, codes[kept].numpy().astype(code_dtype(bundle.visual_tokenizer.codebook_size)))
    atomic_write_text(out / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tags = [m.get("tag", "none") for m in draws]
    sidecar = {
        "rows": len(rows), "lines": [first, first + len(items)], "skipped": [],
        "drawn": dict(Counter(tags)),
        "accepted": dict(Counter(t for t, v in zip(tags, values) if v >= config.threshold)),
        "kept": dict(Counter(tags[i] for i in kept)),
        "reward_sum": float(sum(values)),
    }
    atomic_write_json(out / f"{name}.json", sidecar)
    return sidecar


def rejection_samples(config: RejectionConfig, bundle=None, reward=None, log=print) -> dict:
    """Draw, judge and keep; write the shard folder `config.out`; return its manifest.

    `bundle` / `reward`: already loaded ones (else `config.bundle` is loaded and `config.reward` built).
    """
    from simplear.rewards import build_reward
    from simplear.utils import pick_device
    from simplear.visual_tokenizers import tokenizer_identity

    out = Path(config.out)
    if bundle is None:
        from simplear.bundle import load_bundle

        bundle = load_bundle(config.bundle, device=pick_device(config.device))
    bundle.model.eval()
    if reward is None:
        reward = build_reward(config.reward)
    sampling = _sampling(config, bundle)
    pool = prompt_pool(config)  # a bad prompt file fails here, before the folder is made
    tokenizer = tokenizer_identity(bundle.visual_tokenizer)
    _check_identity(out, _identity(config, bundle, tokenizer))

    # 1. The prompts, cut into shards; a finished shard (its sidecar exists) is not redrawn.
    size = config.prompts_per_shard
    num_shards = math.ceil(len(pool) / size)
    started = time.perf_counter()
    for k in range(num_shards):
        if (out / f"{shard_name(k)}.json").is_file():
            continue
        info = _draw_shard(k, pool[k * size : (k + 1) * size], config, bundle, reward, sampling, out, k * size)
        drawn = sum(info["drawn"].values())
        log(f"[rejection] {shard_name(k)}: kept {info['rows']} of {drawn} images "
            f"({sum(info['accepted'].values()) / drawn:.3f} accepted, {time.perf_counter() - started:.0f} s)")

    # 2. Acceptance per tag over all shards, then the manifest (written last).
    drawn, accepted, kept, reward_sum = Counter(), Counter(), Counter(), 0.0
    for k in range(num_shards):
        info = json.loads((out / f"{shard_name(k)}.json").read_text())
        drawn.update(info["drawn"])
        accepted.update(info["accepted"])
        kept.update(info["kept"])
        reward_sum += info["reward_sum"]
    run = {
        "visual_tokenizer": tokenizer,
        "resolution": int(bundle.config.image_size),
        "grid": list(bundle.config.grid),
        "dtype": code_dtype(bundle.visual_tokenizer.codebook_size).name,
        "crop": "none: the model's own codes",
        "source": {"rejection_samples": {**config.to_dict(), "sampling": sampling.to_dict()}},
        "lines": len(pool),
        "shard_size": size,
        "acceptance": {tag: round(accepted[tag] / n, 4) for tag, n in sorted(drawn.items())},
        "kept_per_tag": dict(sorted(kept.items())),
        "reward_mean": reward_sum / max(1, sum(drawn.values())),
    }
    manifest = build_manifest(out, run, num_shards)
    log(f"[rejection] {out}: kept {manifest['count']} images of {sum(drawn.values())}; "
        f"accepted per tag {run['acceptance']}")
    return manifest


def summary(manifest: dict) -> dict[str, Any]:
    """The figures a user wants from a finished folder (for `--json`)."""
    return {"count": manifest["count"], "acceptance": manifest["acceptance"],
            "kept_per_tag": manifest["kept_per_tag"], "reward_mean": round(manifest["reward_mean"], 4)}
