"""GRPO for AR image models, written out top to bottom (SimpleAR's third stage; DeepSeekMath §4.1).

One step: pick P prompts -> sample G images each from the policy (with the CFG scale and
temperature it will be evaluated with; see `grpo_rollout` for why) -> reward every image ->
normalise rewards within each prompt's group into advantages -> several optimisation passes over
the batch with the clipped surrogate + KL-to-reference loss of `grpo_loss`, the importance ratios
taken against the log-probs kept from rollout time. Logs reward mean/std, KL, clip fraction and
tokens/s to `OUT/log.jsonl` (records `kind: "train"`); judges the policy on a prompt suite every
`eval_every` steps (records `kind: "eval"`, `judge_score` = GenEval overall, so `simplear plot OUT`
draws reward and judge score over steps); checkpoints atomically (`OUT/checkpoints/step-NNNNNN/`) and resumes; ends
with a bundle in `OUT/bundle/` whose sampling defaults are the GRPO setting.

Under `torchrun --nproc_per_node=N` every rank samples and scores whole groups of its own
prompts (so advantages need no communication) and DDP averages the gradients; rank 0 writes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from simplear.train import distributed as dist_utils
from simplear.train.checkpoint import latest_checkpoint, load_checkpoint, load_model_state, save_checkpoint
from simplear.train.grpo_loss import LossStats, flat_group_fraction, group_advantages, grpo_loss
from simplear.train.grpo_prompts import (
    evaluation_prompts,
    grpo_tag_weights,
    prompts_for_step,
    training_prompts,
)
from simplear.train.grpo_rollout import GuidedPolicy, Rollout, check_policy_config, sample_rollout
from simplear.train.logging import RunLogger
from simplear.utils import (
    atomic_write_json,
    autocast_factory,
    check_precision,
    pick_device,
    uses_bf16_autocast,
)


@dataclass(frozen=True)
class GRPOConfig:
    """Everything a GRPO run needs; saved as `OUT/config.json`. Defaults run on a laptop CPU."""

    init_from: str = ""  # bundle folder (the SFT model): policy init and frozen reference
    out: str = "runs/grpo"
    reward: str = "shapes"  # reward spec, see simplear.rewards.build_reward
    prompts: str | None = None  # JSONL of GenEval metadata lines; None: ShapesWorld training prompts
    # The ShapesWorld training prompts' tag mix, "TAG=W,..." over equal weights ("" = all equal):
    # rollouts of tags the model already gets right give every image of a group the same reward,
    # so no advantage, and weighting them down spends the rollouts where groups disagree.
    tag_weights: str = ""
    eval_prompts: str | None = None  # JSONL for periodic evaluation; None: the ShapesWorld suite
    steps: int = 100
    prompts_per_step: int = 4  # P (global, over all ranks)
    group_size: int = 8  # G images per prompt
    passes: int = 2  # optimisation passes over each rollout batch
    minibatch_size: int = 0  # images per optimiser step within a pass; 0 = the whole local batch
    micro_batch_size: int = 8  # images per forward/backward (memory only; gradients accumulate)
    # Images per sampler call in the rollouts; 0 = micro_batch_size.
    # Larger is faster per image (the fast engine on the 2-core CPU: 0.147 s at 16, 0.110 s at 32).
    # Each call's draws are seeded by its first image, so a DDP run draws the same images as one
    # process only when this divides every rank's share of the step.
    rollout_batch_size: int = 0
    lr: float = 1e-5
    lr_schedule: str = "constant"  # constant | cosine (SimpleAR used cosine)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    clip_eps: float = 0.2
    beta: float = 0.01  # KL weight; 0 skips the reference model entirely
    cfg_scale: float | None = None  # None: the bundle's default (rollouts, loss and evaluation)
    temperature: float | None = None  # None: the bundle's default
    sampler: str = "engine"  # rollouts: "engine" (fast, static cache) or "reference"; same distribution
    eval_every: int = 25  # 0 disables periodic evaluation
    eval_num_prompts: int = 96  # N prompts spread over the evaluation suite (0 = all)
    eval_images_per_prompt: int = 1
    eval_seed: int = 1234
    log_every: int = 1  # console line every N steps (every step is in log.jsonl)
    progress: bool = True  # progress bar on stderr
    checkpoint_every: int = 25
    keep_last: int = 2
    seed: int = 0
    device: str | None = None
    resume: bool = False
    bundle_dtype: str = "float32"  # precision of OUT/bundle weights ("bfloat16" halves the size)
    # Teacher-forced forwards (old / reference log-probs and the loss): "fp32" | "bf16" (autocast;
    # weights, optimiser and the sampler stay float32) | "auto" (bf16 on CUDA and on CPUs with
    # native bf16 matmuls). Both log-probs of every ratio come from the same precision.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "group_size", "passes", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2: advantages are relative to the other images of a group")
        if self.minibatch_size < 0:
            raise ValueError(f"minibatch_size must be >= 0, got {self.minibatch_size}")
        if self.rollout_batch_size < 0:
            raise ValueError(f"rollout_batch_size must be >= 0 (0 = micro_batch_size), got {self.rollout_batch_size}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.bundle_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"bundle_dtype must be float32, bfloat16 or float16, got {self.bundle_dtype!r}")
        check_precision(self.precision)
        if self.sampler not in ("engine", "reference"):
            raise ValueError(f"sampler must be 'engine' or 'reference', got {self.sampler!r}")
        if self.tag_weights:
            if self.prompts:
                raise ValueError("tag_weights weighs the ShapesWorld training prompts; with a prompts file, "
                                 "write the mix you want into the file instead")
            grpo_tag_weights(self.tag_weights)  # raises, naming the bad item
        if self.beta < 0 or self.clip_eps <= 0:
            raise ValueError(f"need beta >= 0 and clip_eps > 0, got beta={self.beta}, clip_eps={self.clip_eps}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- distributed helpers ---------------------------------------------------------------------


def _all_mean(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        values = values.clone()
        torch.distributed.all_reduce(values)
        values /= world
    return values


def _gather_rewards(rewards: torch.Tensor, world: int) -> torch.Tensor:
    if world == 1:
        return rewards
    parts = [torch.empty_like(rewards) for _ in range(world)]
    torch.distributed.all_gather(parts, rewards)
    return torch.cat(parts)


# ---- one optimisation pass -------------------------------------------------------------------


def _lr_factor(config: GRPOConfig, step: int) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def optimise_batch(policy: torch.nn.Module, rollout: Rollout, advantages: torch.Tensor,
                   optimizer: torch.optim.Optimizer, config: GRPOConfig, generator: torch.Generator,
                   autocast: Callable[[], Any] = contextlib.nullcontext) -> list[LossStats]:
    """`config.passes` passes over the rollout; one optimiser step per minibatch.

    The loss of a minibatch is accumulated over micro-batches, each weighted by its share of the
    minibatch, so the gradient equals the full-minibatch gradient whatever the memory split.
    Under DDP, gradients are synchronised only on the last micro-batch of each minibatch.
    When the rollout carries no old log-probs, the first minibatch must be the whole batch: its
    forward runs before any update, so its detached log-probs are the rollout-time ones.
    """
    n = rollout.codes.shape[0]
    mb = config.minibatch_size or n
    old = rollout.old_logprobs
    if old is None and mb < n:
        raise ValueError("old log-probs can be taken from the first pass only when a minibatch is the whole batch")
    old = None if old is None else old.clone()
    stats: list[LossStats] = []
    params = [p for p in policy.parameters() if p.requires_grad]
    for _ in range(config.passes):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, mb):
            minibatch = order[start : start + mb]
            optimizer.zero_grad(set_to_none=True)
            chunks = list(torch.split(minibatch, config.micro_batch_size))
            first_pass = old is None
            if first_pass:
                old = torch.empty_like(rollout.codes, dtype=torch.float32)
            for i, index in enumerate(chunks):
                part = rollout.select(index)
                sync = i == len(chunks) - 1 or not hasattr(policy, "no_sync")
                ctx = policy.no_sync() if not sync else contextlib.nullcontext()
                with ctx:
                    with autocast():
                        logp = policy(part.batch, part.codes)
                    if first_pass:
                        old[index.to(old.device)] = logp.detach().to(old.device)
                    loss, st = grpo_loss(
                        logp, old[index.to(old.device)].to(logp.device),
                        advantages[index.to(advantages.device)].to(logp.device),
                        ref_logprobs=part.ref_logprobs, clip_eps=config.clip_eps, beta=config.beta,
                    )
                    (loss * (len(index) / len(minibatch))).backward()
                stats.append(st)
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
    return stats


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


# ---- the run ---------------------------------------------------------------------------------


def train_grpo(
    config: GRPOConfig,
    *,
    bundle: Any = None,
    reward: Callable | None = None,
    evaluate: Callable[[Any, int], dict] | None = None,
) -> dict:
    """Run GRPO as configured; returns the final summary (also written to `OUT/summary.json`).

    `bundle` (an already-loaded `Bundle`) replaces `config.init_from`; `reward` (any callable
    `reward(images, prompts, metadata)`) replaces the `config.reward` spec; `evaluate(bundle, step)`
    replaces the periodic judge evaluation (tests use these to run on tiny stand-ins).
    """
    from simplear.bundle import load_bundle, save_bundle
    from simplear.rewards import build_reward
    from simplear.sampling.config import SamplingConfig

    device = pick_device(config.device)
    info = dist_utils.init_distributed(device)
    device = dist_utils.local_device(device, info)  # one GPU per process under torchrun
    rank, world = info.rank, info.world_size
    if config.prompts_per_step % world:
        raise ValueError(f"prompts_per_step {config.prompts_per_step} must be divisible by the {world} processes")
    out = Path(config.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    # 1. Policy, frozen reference, the sampling setting that defines the policy.
    if bundle is None:
        if not config.init_from:
            raise ValueError("GRPO needs --init-from BUNDLE (the SFT model)")
        bundle = load_bundle(config.init_from, device=device)
    bundle.model.to(device)
    if bundle.visual_tokenizer is not None and hasattr(bundle.visual_tokenizer, "to"):
        bundle.visual_tokenizer.to(device)
    defaults = bundle.config.sampling
    sampling = SamplingConfig(
        cfg_scale=float(config.cfg_scale if config.cfg_scale is not None else defaults.cfg_scale),
        temperature=float(config.temperature if config.temperature is not None else defaults.temperature),
    )
    check_policy_config(sampling)
    vocab, model = bundle.vocab, bundle.model
    reference = None
    if config.beta > 0:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    policy = GuidedPolicy(model, vocab.visual_offset, vocab.codebook_size, sampling)
    ref_policy = None if reference is None else GuidedPolicy(reference, vocab.visual_offset, vocab.codebook_size, sampling)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(config, s))
    reward_fn = reward if reward is not None else build_reward(config.reward, device=str(device))
    autocast = autocast_factory(config.precision, device)  # teacher-forced forwards only

    # 2. Resume: model + optimiser + scheduler + step. Prompts and rollout seeds derive from the step.
    start_step = 0
    found = latest_checkpoint(out)
    if found is not None and not config.resume:
        raise ValueError(f"{out} already holds a GRPO run ({found.name}); pass --resume to continue it "
                         "or choose another --out")
    if found is not None:
        ckpt = load_checkpoint(found)
        load_model_state(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_step = int(ckpt["state"]["step"])
        if rank == 0:
            print(f"grpo: resumed from {found} at step {start_step}", flush=True)
    # The logger drops lines logged after the checkpoint we resume from (those steps are redone).
    logger = RunLogger(out, config.steps, start_step=start_step, enabled=rank == 0, progress=config.progress)
    if rank == 0:
        atomic_write_json(out / "config.json", {**config.to_dict(), "sampling": sampling.to_dict(), "world_size": world,
                                                "autocast": "bf16" if uses_bf16_autocast(config.precision, device) else "off"})
    wrapped = policy
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            policy, device_ids=[device.index] if device.type == "cuda" else None)

    engine = None
    if config.sampler == "engine":
        from simplear.sampling.engine import FastEngine

        engine = FastEngine(model, vocab.visual_offset, vocab.codebook_size)
    pool = training_prompts(config) if (config.prompts or config.tag_weights or reward is None) else None
    eval_fn = evaluate if evaluate is not None else _judge_evaluator(config, sampling)
    grid = tuple(bundle.config.grid)
    num_tokens = int(grid[0] * grid[1])
    local_prompts = config.prompts_per_step // world
    local_images = local_prompts * config.group_size
    summary: dict = {}
    if rank == 0 and config.eval_every and start_step == 0:
        # The starting point of the judge-score curve: the initial (SFT) policy, same setting.
        model.eval()
        result = eval_fn(bundle, 0)
        logger.log({"kind": "eval", "step": 0, "judge_score": result.get("overall"), **result})
    dist_utils.barrier(info)

    for step in range(start_step, config.steps):
        started = time.perf_counter()

        def chunk_generator(start: int, step: int = step) -> torch.Generator:
            # Seeded by the chunk's first image in the global batch: the same images are drawn
            # whatever the number of processes (when chunks align), which the DDP test checks.
            first = rank * local_images + start
            return torch.Generator(device=device).manual_seed(config.seed * 7919 + step * 104729 + first)

        cpu_gen = torch.Generator().manual_seed(config.seed * 31 + step * 17 + rank)

        # 3. Rollouts: G images for each of this rank's prompts, from the current policy.
        metadata = _step_prompts(pool, step, config, rank, local_prompts)
        prompts = [m["prompt"] for m in metadata for _ in range(config.group_size)]
        group_meta = [m for m in metadata for _ in range(config.group_size)]
        cond_ids = [vocab.encode_prompt(p) for p in prompts]
        model.eval()
        rollout = sample_rollout(
            policy, cond_ids, vocab.encode_unconditional(), num_tokens=num_tokens, generator=chunk_generator,
            pad_id=vocab.pad_id, reference=ref_policy, micro_batch=config.micro_batch_size, engine=engine,
            autocast=autocast,
            old_logprobs=bool(config.minibatch_size) and config.minibatch_size < local_images,
            sample_batch=config.rollout_batch_size or config.micro_batch_size,
        )

        # 4. Rewards of the decoded images; advantages within each group.
        with torch.no_grad():
            images = bundle.visual_tokenizer.decode(rollout.codes.view(-1, *grid))
        rewards = torch.as_tensor(reward_fn(images, prompts, group_meta), dtype=torch.float32).cpu()
        if rewards.shape != (len(prompts),):
            raise ValueError(f"reward returned shape {tuple(rewards.shape)}, expected ({len(prompts)},)")
        advantages = group_advantages(rewards, config.group_size)

        # 5. Optimisation passes against the rollout-time log-probs.
        model.train()
        lr_used = scheduler.get_last_lr()[0]  # this step's lr (the scheduler then moves on to the next)
        loss_stats = optimise_batch(wrapped, rollout, advantages, optimizer, config, cpu_gen, autocast)
        scheduler.step()

        # 6. Log (global statistics), evaluate, checkpoint.
        all_rewards = _gather_rewards(rewards.to(device), world).cpu()
        means = _all_mean(torch.tensor([_mean([s.kl for s in loss_stats]), _mean([s.clip_fraction for s in loss_stats]),
                                        _mean([s.loss for s in loss_stats])], device=device), world).cpu()
        seconds = time.perf_counter() - started
        record = {
            "step": step + 1,
            "reward_mean": float(all_rewards.mean()),
            "reward_std": float(all_rewards.std(unbiased=False)),
            # Groups whose images all scored the same: zero advantages, so no policy gradient from them.
            "flat_groups": flat_group_fraction(all_rewards, config.group_size),
            "kl": float(means[0]),
            "clip_fraction": float(means[1]),
            "loss": float(means[2]),
            "lr": lr_used,
            "images": int(all_rewards.numel()),
            "rollout_tokens_per_s": world * rollout.codes.numel() / max(rollout.seconds, 1e-9),
            "tokens_per_s": world * rollout.codes.numel() / max(seconds, 1e-9),
            "seconds": seconds,
        }
        is_last = step + 1 == config.steps
        if rank == 0:
            logger.log({"kind": "train", **record}, console=(step + 1) % config.log_every == 0 or is_last)
            logger.step(record["loss"])
            if config.eval_every and ((step + 1) % config.eval_every == 0 or is_last):
                model.eval()
                result = eval_fn(bundle, step + 1)
                logger.log({"kind": "eval", "step": step + 1, "judge_score": result.get("overall"), **result})
            if (step + 1) % config.checkpoint_every == 0 or is_last:
                save_checkpoint(out, step + 1, model.state_dict(), optimizer.state_dict(), scheduler.state_dict(),
                                {}, keep=config.keep_last)
        dist_utils.barrier(info)
        summary = record

    logger.close()
    # 7. The final bundle: the policy with the sampling setting it was optimised (and evaluated) for.
    if rank == 0:
        final = dataclasses.replace(bundle, model=model)
        final.config = _grpo_bundle_config(bundle.config, sampling, config)
        dtype = getattr(torch, config.bundle_dtype)
        save_bundle(out / "bundle", final, dtype=None if dtype == torch.float32 else dtype)
        summary = {"steps": config.steps, "bundle": str(out / "bundle"), "sampling": sampling.to_dict(), **summary}
        atomic_write_json(out / "summary.json", summary)
    del wrapped  # before cleanup: see dist_utils.cleanup
    dist_utils.barrier(info)
    dist_utils.cleanup(info)
    return summary


def _step_prompts(pool, step, config, rank, local_prompts) -> list[dict]:
    if pool is None:  # a custom reward with no prompt file: any fixed prompt list will do
        pool = [{"prompt": "a photo of a red circle", "tag": "single_object",
                 "include": [{"class": "circle", "count": 1, "color": "red"}]}]
    chosen = prompts_for_step(pool, step, config.prompts_per_step, config.seed)
    return chosen[rank * local_prompts : (rank + 1) * local_prompts]


def _grpo_bundle_config(base, sampling, config: GRPOConfig):
    from simplear.bundle import SamplingDefaults

    extra = dict(base.extra)
    extra["grpo"] = {"steps": config.steps, "reward": config.reward, "beta": config.beta,
                     "group_size": config.group_size, "init_from": config.init_from}
    return dataclasses.replace(
        base, sampling=SamplingDefaults(cfg_scale=sampling.cfg_scale, temperature=sampling.temperature,
                                        top_k=None, top_p=None), extra=extra,
    )


def _judge_evaluator(config: GRPOConfig, sampling) -> Callable[[Any, int], dict]:
    """Periodic evaluation: the judge's GenEval score on a prompt suite, same sampling setting."""

    def run(bundle, step: int) -> dict:
        from simplear.train.suite_eval import evaluate_bundle

        prompts = evaluation_prompts(config)
        return evaluate_bundle(bundle, prompts, images_per_prompt=config.eval_images_per_prompt,
                               seed=config.eval_seed, sampling=sampling, batch_size=config.micro_batch_size * 2)

    return run
