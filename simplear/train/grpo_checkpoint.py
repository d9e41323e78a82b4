"""GRPO checkpoints: `DIR/step-NNNNNN/` holding the policy weights (safetensors), the optimiser and
scheduler state, and the step, written atomically (a killed run never leaves a half checkpoint
under a final name) and pruned to the last K.

The reference model is not saved: it is the `--init-from` bundle, reloaded on resume. Rollout
seeds and prompt choices are pure functions of (seed, step), so the step is all the RNG state a
resumed run needs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from simplear.utils import atomic_dir

PREFIX = "step-"


def _step_of(path: Path) -> int:
    return int(path.name[len(PREFIX):])


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
             and (p / "state.json").is_file()]
    return sorted(found, key=_step_of)


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def save_checkpoint(folder: str | Path, step: int, model, optimizer, scheduler, keep_last: int = 2) -> Path:
    from safetensors.torch import save_file

    target = Path(folder) / f"{PREFIX}{step:06d}"
    with atomic_dir(target) as tmp:
        # Tied embeddings share storage; safetensors refuses shared tensors, so save clones.
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step}) + "\n")
    for old in list_checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: str | Path, model, optimizer=None, scheduler=None) -> int:
    """Restore into `model` (strictly) and, when given, the optimiser and scheduler; returns the step."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{path} is not a GRPO checkpoint (no state.json)")
    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(device)), strict=True)
    if optimizer is not None or scheduler is not None:
        extra = torch.load(path / "optim.pt", map_location=device, weights_only=True)
        if optimizer is not None:
            optimizer.load_state_dict(extra["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(extra["scheduler"])
    return int(json.loads((path / "state.json").read_text())["step"])
