"""Rejection sampling into token shards: the keep rule by hand, shards the AR trainer's dataset
reads, codes that are the scored images, resume without redrawing, and refused bad input."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from pipeline_helpers import make_tiny_bundle

from simplear.bundle import load_bundle
from simplear.data.token_dataset import TokenShardDataset
from simplear.train.rejection import RejectionConfig, accept, prompt_pool, rejection_samples


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def brightness(images, prompts, metadata):
    """Mean brightness in [0, 1] of each PIL image (a deterministic stand-in for the judge)."""
    return torch.tensor([np.asarray(im, dtype=np.float64).mean() / 255 for im in images])


def _config(bundle_dir, out, **kw):
    return RejectionConfig(bundle=str(bundle_dir), out=str(out), **{"num_prompts": 6, "images_per_prompt": 3,
                                                                      "keep_per_prompt": 2, "prompts_per_shard": 4,
                                                                      "batch_size": 5, **kw})


def test_accept_keeps_the_first_accepted_images_of_each_prompt_up_to_keep():
    values = np.array([0.2, 1.0, 1.0, 1.0,   1.0, 0.0, 0.0, 0.0,   0.0, 0.9, 0.5, 0.99])
    assert accept(values, 4, 2, 1.0) == [1, 2, 4]
    assert accept(values, 4, 3, 0.9) == [1, 2, 3, 4, 9, 11]
    assert accept(values, 4, 1, 2.0) == []
    with pytest.raises(ValueError, match="4 rewards per prompt"):
        accept(values[:7], 4, 2, 1.0)


def test_kept_rows_are_the_scored_images_and_the_dataset_reads_them(tmp_path, bundle_dir):
    bundle = load_bundle(bundle_dir)
    scored = []

    def reward(images, prompts, metadata):  # brightness, remembering what it saw
        values = brightness(images, prompts, metadata)
        scored.extend(zip(prompts, values.tolist()))
        return values

    everything = rejection_samples(_config(bundle_dir, tmp_path / "all", threshold=0.0), bundle=bundle,
                                   reward=reward, log=lambda *_: None)
    assert everything["count"] == 6 * 2  # every image passes: exactly `keep` per prompt
    values = np.array([v for _, v in scored])
    threshold = float(np.median(values))
    manifest = rejection_samples(_config(bundle_dir, tmp_path / "some", threshold=threshold), bundle=bundle,
                                 reward=brightness, log=lambda *_: None)
    assert manifest["count"] == len(accept(values, 3, 2, threshold)) > 0  # same draws: same seed, same shards

    dataset = TokenShardDataset([str(tmp_path / "some")], visual_tokenizer=bundle.visual_tokenizer,
                                resolution=bundle.config.image_size)
    assert len(dataset) == manifest["count"]
    pool = prompt_pool(_config(bundle_dir, tmp_path / "x"))
    rows = [json.loads(line) for k in range(2) for line in (tmp_path / "some" / f"shard-0000{k}.jsonl").open()]
    for i, row in enumerate(rows):
        item = dataset[i]
        assert item["captions"] == [pool[row["prompt_index"]]["prompt"]] == row["captions"]
        assert row["reward"] >= threshold
        # The stored codes decode to an image that earns the stored reward.
        with torch.inference_mode():
            image = bundle.visual_tokenizer.decode(item["codes"][None])
        from simplear.visual_tokenizers.images import tensor_to_pil

        assert brightness(tensor_to_pil(image), None, None).item() == pytest.approx(row["reward"], abs=1e-6)
    assert sum(manifest["kept_per_tag"].values()) == manifest["count"]
    assert set(manifest["acceptance"]) == {m["tag"] for m in pool}


def test_a_killed_run_resumes_without_redrawing_finished_shards(tmp_path, bundle_dir):
    bundle = load_bundle(bundle_dir)
    calls = []

    def reward(images, prompts, metadata):
        calls.append(len(images))
        return brightness(images, prompts, metadata)

    config = _config(bundle_dir, tmp_path / "run", threshold=0.3)
    rejection_samples(config, bundle=bundle, reward=reward, log=lambda *_: None)
    first = {p.name: p.read_bytes() for p in (tmp_path / "run").glob("shard-*")}
    assert sum(calls) == 6 * 3
    # Kill during the second shard: its sidecar and the manifest were never written.
    (tmp_path / "run" / "shard-00001.json").unlink()
    (tmp_path / "run" / "manifest.json").unlink()
    (tmp_path / "run" / "shard-00001.npy").write_bytes(b"partial")
    calls.clear()
    rejection_samples(config, bundle=bundle, reward=reward, log=lambda *_: None)
    assert sum(calls) == 2 * 3  # only the second shard's 2 prompts were drawn again
    again = {p.name: p.read_bytes() for p in (tmp_path / "run").glob("shard-*")}
    assert again == first
    assert (tmp_path / "run" / "manifest.json").is_file()

    with pytest.raises(ValueError, match="other settings.*keep_per_prompt"):
        rejection_samples(_config(bundle_dir, tmp_path / "run", threshold=0.3, keep_per_prompt=1),
                          bundle=bundle, reward=reward, log=lambda *_: None)
    # The same path holding other weights (a bundle retrained in place) is another model.
    with torch.no_grad():
        next(bundle.model.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match="other settings.*model_sha256"):
        rejection_samples(config, bundle=bundle, reward=reward, log=lambda *_: None)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="keep_per_prompt"):
        RejectionConfig(bundle="b", out="o", images_per_prompt=2, keep_per_prompt=3)
    with pytest.raises(ValueError, match="images_per_prompt must be >= 1"):
        RejectionConfig(bundle="b", out="o", images_per_prompt=0)
    with pytest.raises(ValueError, match="threshold"):
        RejectionConfig(bundle="b", out="o", threshold=float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        RejectionConfig(bundle="b", out="o", temperature=0.0)


def test_cli_draws_with_the_judge_and_refuses_a_foreign_folder(tmp_path, bundle_dir, capsys):
    out = tmp_path / "samples"
    code = run_cli("data", "rejection-samples", "--model", bundle_dir, "--out", out, "--num-prompts", "3",
                   "--images-per-prompt", "2", "--keep", "1", "--reward", "shapes:partial", "--threshold", "0",
                   "--json")
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["count"] == 3  # partial credit is >= 0 for every image: one kept per prompt
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["rejection_samples"]["reward"] == "shapes:partial"

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert run_cli("data", "rejection-samples", "--model", bundle_dir, "--out", tmp_path / "other") == 2
    assert "not a rejection-sample folder" in capsys.readouterr().err
    assert run_cli("data", "rejection-samples", "--model", bundle_dir, "--out", tmp_path / "x",
                   "--images-per-prompt", "2", "--keep", "3") == 2
    assert "keep_per_prompt" in capsys.readouterr().err
    # A prompt file without prompts is refused before the folder is made, so a fixed rerun starts clean.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tag": "single_object"}\n')
    assert run_cli("data", "rejection-samples", "--model", bundle_dir, "--out", tmp_path / "y",
                   "--prompts", bad) == 2
    assert "prompt" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
