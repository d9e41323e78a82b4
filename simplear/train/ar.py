"""The AR trainer: SimpleAR's pretraining and SFT, one next-token loop with different recipes.

Written out top to bottom, as nanoGPT does: (1) processes and devices, (2) the run folder and its
resolved config, (3) data, vocabulary and model with every check done before a step, (4) loss
module, parallel wrapper, optimiser and schedule, (5) resume, (6) the loop: build the global batch
from sample positions, accumulate gradients over micro-batches, clip, step, log, checkpoint,
evaluate, (7) the final bundle `RUN/bundle/` that `load_bundle` and the Pipeline load.

Run folder: `config.json` (resolved config), `tokenizer/`, `log.jsonl`, `checkpoints/step-N/`
(last K), `samples/step-N.png`, `bundle/` (+ `bundle/train_config.json`).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch

from simplear.train import ar_setup
from simplear.train import distributed as dist_utils
from simplear.train.ar_eval import evaluate
from simplear.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    set_rng_state,
)
from simplear.train.config import TrainConfig, config_json
from simplear.train.logging import RunLogger
from simplear.train.loss import ARLoss, enable_activation_checkpointing
from simplear.train.optim import make_optimizer, make_scheduler
from simplear.train.sequences import SampleOrder, SequenceBuilder, check_captions
from simplear.utils import (
    atomic_write_text,
    autocast_factory,
    pick_device,
    seed_everything,
    uses_bf16_autocast,
)


def train_ar(config: TrainConfig, out: str | Path, resume: bool = False, dataset: Any = None,
             val_dataset: Any = None, visual_tokenizer: Any = None) -> Path:
    """Train (or resume) an AR run into folder `out`; returns the run folder.

    `dataset`/`val_dataset`/`visual_tokenizer` may be given as objects (tests, notebooks); otherwise
    they come from `config.data` (token shard folders and the visual tokenizer folder).
    """
    # 1. Processes and devices.
    device = pick_device(config.device)
    info = dist_utils.init_distributed(device)
    device = dist_utils.local_device(device, info)
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    run_dir = Path(out)
    if config.batch_size % (info.world_size * config.micro_batch_size):
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of micro_batch_size "
                         f"{config.micro_batch_size} x processes {info.world_size}")

    # 2. The run folder. A finished or started run is never overwritten silently.
    saved_config = run_dir / "config.json"
    if resume:
        if not saved_config.is_file():
            raise FileNotFoundError(f"cannot --resume: {saved_config} does not exist")
        ar_setup.check_resume_config(saved_config, config)
    elif saved_config.is_file():
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    dist_utils.barrier(info)  # every rank has looked before rank 0 writes config.json below

    # 3. Data, vocabulary, model: every check before the first step.
    vt = ar_setup.load_visual(config, visual_tokenizer)
    dataset = dataset if dataset is not None else ar_setup.load_shards(
        config.data.shards, vt, config.data.resolution, "training", config.seed)
    if dataset is None:
        raise ValueError("no training data: set data.shards=FOLDER[,FOLDER...] (token shards)")
    if val_dataset is None:
        val_dataset = ar_setup.load_shards(config.data.val_shards, vt, config.data.resolution, "validation", config.seed)
    grid = ar_setup.grid_of(dataset)
    captions = ar_setup.dataset_captions(dataset)
    vocab, model, init_source = ar_setup.build_vocab_and_model(config, vt, captions, run_dir, resume)
    context = config.model.context or model.config.max_position_embeddings
    if context > model.config.max_position_embeddings:
        raise ValueError(f"model.context {context} exceeds the model's max_position_embeddings "
                         f"{model.config.max_position_embeddings}")
    check_captions(captions, vocab, context, grid[0] * grid[1])
    if info.is_main and not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        vocab.text_tokenizer.save_pretrained(run_dir / "tokenizer")
        atomic_write_text(saved_config, config_json(config) + "\n")
    dist_utils.barrier(info)

    # 4. Loss module, parallel wrapper, optimiser, schedule.
    if config.model.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model.config.use_cache = False
    start_step, ckpt = 0, None
    if resume and (path := latest_checkpoint(run_dir)) is not None:
        ckpt = load_checkpoint(path)
        load_model_state(model, ckpt["model"])  # before wrapping: FSDP shards what it is given
        start_step = int(ckpt["state"]["step"])
    model.to(device).train()
    loss_module = ARLoss(model, vocab.visual_offset, vocab.codebook_size, config.text_loss_weight, config.loss_chunk)
    if config.compile:
        loss_module.compile()  # in place: parameters and their names stay those of `model`
    wrapped = dist_utils.wrap_model(loss_module, info, config.parallel, device)
    optimizer = make_optimizer(model, config.optim)
    scheduler = make_scheduler(optimizer, config.optim, config.max_steps)
    bf16 = uses_bf16_autocast(config.precision, device)
    autocast = autocast_factory(config.precision, device)

    # 5. Resume: optimiser, schedule, RNG; the data position follows from the step.
    if ckpt is not None:
        dist_utils.load_optimizer_state(model, optimizer, ckpt["optimizer"], info, config.parallel)
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["state"]["rng"])
        del ckpt
    order = SampleOrder(len(dataset), config.seed)
    builder = SequenceBuilder(vocab, context, config.data.caption_dropout, config.data.caption_choice, config.seed,
                              input_noise=config.data.input_noise)
    val_builder = SequenceBuilder(vocab, context, 0.0, "first", config.seed + 1)
    val_batches = []
    if val_dataset is not None and len(val_dataset):
        mb = config.micro_batch_size
        for b in range(config.eval.val_batches):
            positions = [(b * mb + i) % len(val_dataset) for i in range(mb)]
            val_batches.append(val_builder.build([val_dataset[p] for p in positions], positions))
    logger = RunLogger(run_dir, config.max_steps, start_step, enabled=info.is_main,
                       progress=config.progress, tensorboard=config.tensorboard)
    if start_step == 0:
        logger.log({"kind": "start", "step": 0, "init": init_source, "world_size": info.world_size,
                    "parameters": sum(p.numel() for p in set(model.parameters())), "grid": list(grid),
                    "visual_offset": vocab.visual_offset, "vocab_size": vocab.vocab_size,
                    "autocast": "bf16" if bf16 else "off"}, console=False)

    def run_eval(step: int) -> None:
        # DDP: rank 0 alone on the unwrapped model, the others wait. FSDP: every rank runs the same
        # (seeded) evaluation, since each forward gathers shards from all ranks; rank 0 writes.
        fsdp = info.enabled and config.parallel == "fsdp"
        if info.is_main or fsdp:
            if fsdp:  # sampling calls the inner model, bypassing the root unit's gather hook
                wrapped.unshard()
            record = evaluate(model, loss_module, vocab, vt, val_batches, grid, config.eval, step, run_dir,
                              device, autocast, write=info.is_main)
            if fsdp:
                wrapped.reshard()
            logger.log(record)
        dist_utils.barrier(info)

    # 6. The loop.
    per_rank = config.batch_size // info.world_size
    micro_steps = per_rank // config.micro_batch_size
    done = start_step
    window_tokens, window_losses, window_start = 0.0, [], time.perf_counter()
    for step in range(start_step, config.max_steps):
        # 6a. This rank's share of the global batch: positions are global, so any world size sees
        # the same samples (and the same caption choices) at the same step.
        first = step * config.batch_size + info.rank * per_rank
        micro = []
        for m in range(micro_steps):
            positions = list(range(first + m * config.micro_batch_size, first + (m + 1) * config.micro_batch_size))
            micro.append(builder.build([dataset[order.index(p)] for p in positions], positions))
        local_count = sum(int(b.image_mask.sum()) for b in micro)
        global_count = dist_utils.all_reduce_sum(local_count, info, device)
        # 6b. Forward/backward per micro-batch; the loss is normalised by the global token count,
        # times world_size because DDP averages gradients over ranks.
        loss_total = 0.0
        for m, batch in enumerate(micro):
            batch = batch.to(device)
            sync = m == micro_steps - 1 or not isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
            with (contextlib.nullcontext() if sync else wrapped.no_sync()), autocast():
                loss_sum, _ = wrapped(batch.input_ids, batch.targets, batch.image_mask)
            (loss_sum * (info.world_size / global_count)).backward()
            loss_total += float(loss_sum.detach())
            window_tokens += batch.num_tokens
        # 6c. Clip, step, schedule.
        grad_norm = None
        if config.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP: a DTensor
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = dist_utils.all_reduce_sum(loss_total, info, device) / global_count
        done = step + 1
        window_losses.append(loss)
        logger.step(loss)
        # 6d. Log, checkpoint, evaluate.
        if done % config.log_every == 0 or done == config.max_steps:
            elapsed = time.perf_counter() - window_start
            tokens = dist_utils.all_reduce_sum(window_tokens, info, device)
            # loss: mean over the steps since the last record (smoother curves); last_loss: this step's.
            record = {"kind": "train", "step": done, "loss": sum(window_losses) / len(window_losses),
                      "last_loss": loss, "lr": lr, "tokens_per_s": tokens / elapsed}
            if grad_norm is not None:
                record["grad_norm"] = grad_norm
            logger.log(record)
            window_tokens, window_losses, window_start = 0.0, [], time.perf_counter()
        if done % config.checkpoint_every == 0 or done == config.max_steps or done == config.stop_after:
            _checkpoint(run_dir, done, wrapped, model, optimizer, scheduler, config, info)
        if config.eval.every and done % config.eval.every == 0 and done != config.max_steps:
            run_eval(done)
            window_start = time.perf_counter()  # evaluation time is not training throughput
        if config.stop_after is not None and done >= config.stop_after:
            break

    # 7. Final evaluation and the bundle (a resumed run that had already finished does nothing).
    if done >= config.max_steps and (start_step < config.max_steps or not (run_dir / "bundle").is_dir()):
        run_eval(config.max_steps)
        plain = _unsharded(wrapped, model, info, config)  # collective under FSDP
        if info.is_main:
            _write_bundle(run_dir, plain, vocab, vt, grid, config)
    logger.close()
    wrapped = None  # drop the DDP wrapper before cleanup: see dist_utils.cleanup
    dist_utils.barrier(info)
    dist_utils.cleanup(info)
    return run_dir


def _checkpoint(run_dir, step, wrapped, model, optimizer, scheduler, config: TrainConfig, info) -> None:
    # Collective under FSDP (every rank gathers); only rank 0 writes.
    model_state = dist_utils.full_model_state(wrapped, model, info, config.parallel)
    optim_state = dist_utils.full_optimizer_state(wrapped, model, optimizer, info, config.parallel)
    if info.is_main:
        save_checkpoint(run_dir, step, model_state, optim_state, scheduler.state_dict(),
                        {"position": step * config.batch_size, "config": config.to_dict()},
                        keep=config.keep_checkpoints)
    dist_utils.barrier(info)


def _unsharded(wrapped, model, info, config: TrainConfig):
    """The model itself, or under FSDP a plain copy on rank 0 built from the gathered full state."""
    if not (info.enabled and config.parallel == "fsdp"):
        return model
    state = dist_utils.full_model_state(wrapped, model, info, config.parallel)
    if not info.is_main:
        return None
    from transformers import Qwen2ForCausalLM

    plain = Qwen2ForCausalLM(model.config)
    load_model_state(plain, state)
    return plain


def _write_bundle(run_dir: Path, model, vocab, visual_tokenizer, grid, config: TrainConfig) -> Path:
    from simplear.bundle import Bundle, SamplingDefaults, make_bundle_config, save_bundle

    image_size = grid[0] * int(visual_tokenizer.downsample)
    source = config.data.visual_tokenizer
    kind = str(getattr(visual_tokenizer, "kind", "fsq"))
    bundle_config = make_bundle_config(
        vocab, visual_tokenizer, image_size,
        # The setting the trainer evaluated with (`eval.cfg_scale` / `eval.temperature`), so a
        # fine-tune of a tuned bundle can keep that bundle's defaults by naming them there.
        sampling=SamplingDefaults(cfg_scale=config.eval.cfg_scale, temperature=config.eval.temperature),
        visual_tokenizer_path=source if kind == "cosmos" else None,
        recipe=config.recipe, steps=config.max_steps,
    )
    model.config.use_cache = True
    dtype = getattr(torch, config.bundle_dtype)
    path = save_bundle(run_dir / "bundle", Bundle(model, vocab, visual_tokenizer, bundle_config),
                       dtype=None if dtype == torch.float32 else dtype)
    atomic_write_text(path / "train_config.json", config_json(config) + "\n")
    return path
