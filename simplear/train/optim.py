"""AdamW with decoupled weight decay on matrices only, and warmup + constant / cosine schedules.

SimpleAR trains with AdamW (lr 1e-4, weight decay 0.01, constant). Norm gains and biases are not
decayed (shrinking a RMSNorm gain toward zero only hurts); embedding matrices are, as in the
Hugging Face trainer SimpleAR used.
"""

from __future__ import annotations

import math

import torch

from simplear.train.config import OptimConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: >= 2-D weights decayed, 1-D (norms, biases) not. Tied weights appear once."""
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: torch.nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    # foreach is the fast default on both CPU and GPU; fused needs every param on CUDA.
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr,
        betas=(config.beta1, config.beta2), eps=config.eps,
    )


def lr_factor(step: int, config: OptimConfig, max_steps: int) -> float:
    """Multiplier of the base lr at optimiser step `step` (0-based): linear warmup from lr/warmup,
    then constant, or cosine down to `min_lr_ratio` at `max_steps`."""
    warm = config.warmup_steps
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if config.schedule == "constant":
        return 1.0
    span = max(1, max_steps - warm)
    progress = min(1.0, (step - warm) / span)
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, max_steps: int):
    """A LambdaLR over `lr_factor`; its state (last_epoch) is checkpointed with the optimiser."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config, max_steps))
