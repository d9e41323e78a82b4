"""Training throughput of the AR trainer's step: tokens/s and, where the peak is known, MFU.

Times exactly what `train_ar` runs per optimiser step (ARLoss forward with the visual-rows
chunked loss, backward, gradient clipping, AdamW) on random sequences shaped like real ones
(a prompt of text ids, then image ids), after warm-up steps. Used by `simplear bench train`;
the figures in docs/benchmarks.md come from it.

MFU = flops_per_token x tokens/s / peak FLOP/s, with `simplear.model.flops_per_token`
(6 x non-embedding parameters + attention + the visual head rows). Peak bf16 dense FLOP/s are
known for a few GPUs; elsewhere pass `peak_tflops`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

# Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "4090": 165.0}


@dataclass(frozen=True)
class ThroughputConfig:
    preset: str = "shapes"
    text_vocab: int = 512  # SimpleAR with Qwen2.5's tokenizer: 151,672
    codebook_size: int = 1000  # Cosmos: 64,000
    image_tokens: int = 64  # 8x8 codes (64 px with an 8x tokenizer); 1,024 for 512 px with Cosmos
    prompt_tokens: int = 20
    micro_batch_size: int = 32
    steps: int = 10
    warmup: int = 2
    device: str | None = None
    precision: str = "auto"  # as TrainConfig.precision
    gradient_checkpointing: bool = False
    loss_chunk: int = 2048
    threads: int | None = None
    peak_tflops: float | None = None
    compile: bool = False


def _peak(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def measure_throughput(config: ThroughputConfig) -> dict:
    """Run `warmup + steps` training steps; returns tokens/s, step time, FLOPs/token, MFU."""
    from simplear.model import build_model, count_parameters, flops_per_token
    from simplear.train.config import OptimConfig
    from simplear.train.loss import ARLoss, enable_activation_checkpointing
    from simplear.train.optim import make_optimizer
    from simplear.utils import autocast_factory, pick_device, uses_bf16_autocast

    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    vocab_size = config.text_vocab + config.codebook_size
    seq = config.prompt_tokens + config.image_tokens - 1
    model = build_model(config.preset, vocab_size, seed=0)
    if config.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model.config.use_cache = False
    model.to(device).train()
    loss_module = ARLoss(model, config.text_vocab, config.codebook_size, chunk=config.loss_chunk)
    step_fn = torch.compile(loss_module) if config.compile else loss_module
    optimizer = make_optimizer(model, OptimConfig(lr=1e-4))
    bf16 = uses_bf16_autocast(config.precision, device)
    autocast = autocast_factory(config.precision, device)

    g = torch.Generator().manual_seed(0)
    b = config.micro_batch_size
    ids = torch.cat([torch.randint(0, config.text_vocab, (b, config.prompt_tokens), generator=g),
                     torch.randint(config.text_vocab, vocab_size, (b, config.image_tokens), generator=g)], 1)
    input_ids, targets = ids[:, :-1].to(device), ids[:, 1:].to(device)
    image_mask = torch.zeros_like(targets, dtype=torch.bool)
    image_mask[:, config.prompt_tokens - 1:] = True

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    for i in range(config.warmup + config.steps):
        sync()
        start = time.perf_counter()
        with autocast():
            loss_sum, count = step_fn(input_ids, targets, image_mask)
        (loss_sum / count).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if i >= config.warmup:
            times.append(time.perf_counter() - start)
    step_s = sum(times) / len(times)
    tokens_per_s = b * seq / step_s
    fpt = flops_per_token(model.config, seq, loss_rows=config.codebook_size)
    peak = _peak(device, config.peak_tflops)
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "preset": config.preset, "parameters": count_parameters(model),
        "non_embedding_parameters": count_parameters(model, embeddings=False),
        "sequence": seq, "micro_batch_size": b, "step_s": step_s, "tokens_per_s": tokens_per_s,
        "image_tokens_per_s": b * config.image_tokens / step_s, "flops_per_token": fpt,
        "achieved_tflops": fpt * tokens_per_s / 1e12, "bf16": bf16,
    }
    if peak:
        out["mfu"] = fpt * tokens_per_s / peak
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    out["config"] = asdict(config)
    return out
