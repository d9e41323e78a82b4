"""Training checkpoints: everything `--resume` needs to continue exactly, written atomically.

`RUN/checkpoints/step-000123/` holds `model.safetensors` (the full, unsharded weights),
`optimizer.pt` + `scheduler.pt` (torch.save of plain state dicts, loaded with weights_only=True),
and `state.json` (step, data position, RNG states, the resolved config). Each folder appears
whole or not at all (`atomic_dir`), and only the last K are kept. A checkpoint is not a
bundle: the bundle (`RUN/bundle/`) is what users load; checkpoints are for resuming.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from simplear.utils import atomic_dir, atomic_write_json

PREFIX = "step-"


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) RNG states as JSON-friendly values."""
    np_state = np.random.get_state()
    state = {
        "python": repr(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    import ast

    random.setstate(ast.literal_eval(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def save_checkpoint(run_dir: str | Path, step: int, model_state: dict, optimizer_state: dict,
                    scheduler_state: dict, state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` (state.json last) and delete all but the newest `keep`."""
    target = Path(run_dir) / "checkpoints" / f"{PREFIX}{step:06d}"
    with atomic_dir(target) as tmp:
        weights, seen = {}, set()
        for name, tensor in model_state.items():
            tensor = tensor.detach().cpu().contiguous()
            key = (tensor.data_ptr(), tuple(tensor.shape))
            if key in seen:  # a tied head: safetensors refuses shared storage
                continue
            seen.add(key)
            weights[name] = tensor
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler_state, tmp / "scheduler.pt")
        atomic_write_json(tmp / "state.json", {**state, "step": step, "rng": rng_state()})
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: str | Path) -> dict:
    """{"model", "optimizer", "scheduler", "state"} of one checkpoint folder."""
    path = Path(path)
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "state.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} is incomplete: {name} is missing")
    return {
        "model": load_file(str(path / "model.safetensors")),
        "optimizer": torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True),
        "scheduler": torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True),
        "state": json.loads((path / "state.json").read_text()),
    }


def load_model_state(model, state: dict) -> None:
    """Strict load that accepts only tied weights missing (checkpoints store them once)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    untied = [k for k in missing if not any(params.get(k) is params.get(j) for j in state)]
    if untied or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {untied}, unexpected {unexpected}")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None
