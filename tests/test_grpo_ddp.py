"""GRPO under torchrun: 2 CPU processes (gloo) reproduce the 1-process run at the same global batch.

Each process samples whole groups for its own prompts with generators seeded by the images'
global positions, and DDP averages the gradients, so the two runs see the same images, the same
rewards and take the same optimiser steps. Run as a script, this file is the torchrun worker.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def _config(out):
    from simplear.train.grpo import GRPOConfig

    return GRPOConfig(out=str(out), steps=2, prompts_per_step=2, group_size=4, passes=2, lr=1e-2, beta=0.05,
                      eval_every=0, checkpoint_every=2, micro_batch_size=4, seed=3, device="cpu",
                      progress=False)


def _train(out):
    sys.path.insert(0, str(HERE))
    from test_grpo import _bundle, brightness

    from simplear.train.grpo import train_grpo

    torch.set_num_threads(1)
    return train_grpo(_config(out), bundle=_bundle(), reward=brightness)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__)), str(tmp_path / "ddp")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    before = torch.get_num_threads()
    try:
        _train(tmp_path / "single")
    finally:
        torch.set_num_threads(before)

    def log(name):
        return [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]

    single, ddp = log("single"), log("ddp")
    assert [r["images"] for r in ddp] == [8, 8]  # the global batch: 2 prompts x 4 images
    for a, b in zip(single, ddp):
        assert a["reward_mean"] == b["reward_mean"]  # the same images were drawn
        assert abs(a["loss"] - b["loss"]) < 1e-5
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "single" / "checkpoints" / "step-000002" / "model.safetensors"))
    wb = load_file(str(tmp_path / "ddp" / "checkpoints" / "step-000002" / "model.safetensors"))
    # Same up to float summation order, which Adam's g/sqrt(v) amplifies on tiny gradients: well
    # under 1% of one step (lr 1e-2).
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2


if __name__ == "__main__":
    _train(sys.argv[1])
