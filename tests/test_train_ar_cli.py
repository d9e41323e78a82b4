"""`simplear train ar` on real token shards, with sampling evaluation, then `simplear plot`."""

import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image
from test_bundle import tiny_vt

from simplear.train.logging import read_log


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A tiny FSQ tokenizer folder and 16 px token shards (train + val) made by the data module."""
    from simplear.data.shards import TokenizeConfig, tokenize_dataset

    root = tmp_path_factory.mktemp("ar_cli")
    vt = tiny_vt()
    vt.save_pretrained(root / "vt")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    with open(root / "captions.jsonl", "w") as f:
        for i in range(24):
            name = list(colours)[i % 2]
            pixels = np.clip(np.array(colours[name]) + rng.normal(0, 10, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{i}.png")
            f.write(json.dumps({"image": f"images/{i}.png", "captions": [f"a {name} square"]}) + "\n")
    for name in ("train", "val"):
        tokenize_dataset(TokenizeConfig(data=str(root / "captions.jsonl"), tokenizer=str(root / "vt"),
                                        out=str(root / name), resolution=16, shard_size=10), log=lambda *a: None)
    return root


def common(root):
    return ["model.preset=tiny", "model.context=64", f"data.shards={root / 'train'}",
            f"data.val_shards={root / 'val'}", f"data.visual_tokenizer={root / 'vt'}", "data.resolution=16",
            "data.text_vocab_size=280", "batch_size=8", "micro_batch_size=8", "log_every=1", "progress=false"]


def test_train_ar_cli_with_evaluation_and_plot(shards, tmp_path):
    run = tmp_path / "run"
    overrides = common(shards) + ["max_steps=3", "eval.suite_prompts=2", "eval.grid_size=2",
                                  "checkpoint_every=2", "optim.lr=3e-3"]
    assert run_cli("train", "ar", "--recipe", "shapes-pretrain", "--out", run, *overrides) == 0
    evals = read_log(run, "eval")
    assert [e["step"] for e in evals] == [3]
    assert 0.0 <= evals[-1]["judge_score"] <= 1.0 and evals[-1]["val_loss"] > 0
    assert Image.open(run / evals[-1]["samples"]).size == (32, 16)
    saved = json.loads((run / "config.json").read_text())
    assert saved["recipe"] == "shapes-pretrain" and saved["data"]["resolution"] == 16
    assert (run / "bundle" / "simplear.json").is_file()
    assert run_cli("plot", run) == 0
    assert Image.open(run / "curves.png").size[0] > 100
    # A second run in the same folder without --resume is refused; --resume of a finished run is a no-op.
    assert run_cli("train", "ar", "--recipe", "shapes-pretrain", "--out", run, *overrides) == 2
    assert run_cli("train", "ar", "--out", run, "--resume") == 0


def test_shard_mismatch_is_a_clear_error(shards, tmp_path, capsys):
    # Shards hold 16 px codes; asking for 32 px is refused before any step.
    args = [a.replace("data.resolution=16", "data.resolution=32") for a in common(shards)]
    assert run_cli("train", "ar", "--out", tmp_path / "r", *args, "max_steps=1") == 2
    assert "16 px" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoints").exists()
    # Shards made by another visual tokenizer (other weights) are refused.
    other = tiny_vt()
    import torch

    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    other.save_pretrained(tmp_path / "other_vt")
    args = [a if not a.startswith("data.visual_tokenizer") else f"data.visual_tokenizer={tmp_path / 'other_vt'}"
            for a in common(shards)]
    assert run_cli("train", "ar", "--out", tmp_path / "r2", *args, "max_steps=1") == 2
    assert "another visual tokenizer" in capsys.readouterr().err
    assert run_cli("train", "ar", "--out", tmp_path / "r3", "--resume") == 2
    assert run_cli("plot", tmp_path / "nothing") == 2
