"""Multi-process training under `torchrun`: process group setup, DDP and FSDP wrapping.

Launch: `torchrun --nproc_per_node=N -m simplear train ar --recipe ...`. The backend is gloo on
CPU and nccl on GPU. `parallel="ddp"` replicates the model (small presets); `parallel="fsdp"`
shards parameters, gradients and optimiser state with FSDP2 (`fully_shard`), one unit per
decoder layer plus the root (embeddings, final norm, head), which is what lets the 0.5B/1.5B
presets train with long sequences. The model file knows nothing of this (torchtitan's split).
Without torchrun (no WORLD_SIZE/RANK) everything here is a no-op and training is single-process;
under `torchrun --nproc_per_node=1` the DDP/FSDP code paths run with one process (a one-GPU check).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # under torchrun (even with one process: FSDP/DDP paths then run too)
    owns_group: bool = False  # we created the process group, so cleanup() destroys it

    @property
    def enabled(self) -> bool:
        return self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment (if any)."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return DistInfo()
    world = int(os.environ["WORLD_SIZE"])
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
    if dist.is_initialized():  # the caller's group (e.g. several runs in one launch): leave it to them
        return DistInfo(rank=rank, world_size=world, local_rank=local, launched=True)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, launched=True, owns_group=True)


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def wrap_model(loss_module: torch.nn.Module, info: DistInfo, parallel: str, device: torch.device):
    """DDP or FSDP2 around the loss module (its forward runs the model); unchanged when single-process."""
    if not info.enabled:
        return loss_module
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(loss_module, device_ids=ids)
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in loss_module.model.model.layers:
            fully_shard(layer)
        fully_shard(loss_module)
        return loss_module
    raise ValueError(f"unknown parallel mode {parallel!r}")


def all_reduce_sum(value: float | int, info: DistInfo, device: torch.device) -> float:
    if not info.enabled:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def full_model_state(wrapped: torch.nn.Module, model: torch.nn.Module, info: DistInfo, parallel: str) -> dict:
    """The unsharded model state dict (on CPU for FSDP), collective under FSDP: call on every rank."""
    if info.enabled and parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return model.state_dict()


def full_optimizer_state(wrapped, model, optimizer, info: DistInfo, parallel: str) -> dict:
    if info.enabled and parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def load_optimizer_state(model, optimizer, state: dict, info: DistInfo, parallel: str) -> None:
    if info.enabled and parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def cleanup(info: DistInfo) -> None:
    """Tear down the process group. Callers `del` their DDP wrapper first: its Reducer must be
    freed while the group is still registered, or the Reducer drops the group's last reference
    on the caller's return and the gloo destructor joins its worker thread while holding the GIL
    that the worker needs (a deadlock seen about one run in ten)."""
    if not info.enabled:
        return
    gc.collect()  # DDP wrappers sit in reference cycles: free them now, before the group goes
    # A group cannot be re-created under torchrun's store after destruction, so a caller that
    # runs several trainings in one launch creates the group itself and we leave it alone.
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
