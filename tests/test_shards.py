"""Token shards: tokenize_dataset (skips, resume, refusals, torchrun) and TokenShardDataset."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from PIL import Image

from simplear.data.shards import TokenizeConfig, snap_flat, tokenize_dataset, uniform_code
from simplear.data.token_dataset import TokenShardDataset, TokenSource, parse_source, select_rows
from simplear.visual_tokenizers import (
    FSQAutoencoder,
    FSQAutoencoderConfig,
    load_visual_tokenizer,
    pil_to_tensor,
)

TINY = FSQAutoencoderConfig(levels=(5, 4, 3), downsample=8, channels=(8, 8, 8, 8), res_blocks=(0, 0, 0, 1))
GOOD = 9


def _tokenizer(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    FSQAutoencoder(TINY).save_pretrained(folder)
    return folder


def _dataset(root: Path) -> Path:
    """9 good images of different sizes, plus one line of every kind of bad input."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(GOOD):
        array = rng.integers(0, 256, size=(24 + 4 * i, 40, 3), dtype=np.uint8)
        Image.fromarray(array).save(root / "images" / f"{i}.png")
        lines.append(json.dumps({"image": f"images/{i}.png", "captions": [f"short {i}", f"long {i}"], "seed": i}))
        if i == 2:
            lines.append(json.dumps({"image": "images/missing.png", "captions": ["x"]}))
        if i == 5:
            good = (root / "images" / "0.png").read_bytes()
            (root / "images" / "trunc.png").write_bytes(good[: len(good) // 2])
            lines.append(json.dumps({"image": "images/trunc.png", "captions": ["x"]}))
            lines.append("{not json")
            lines.append(json.dumps({"image": "images/1.png", "captions": []}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root / "captions.jsonl"


@pytest.fixture()
def setup(tmp_path):
    return _dataset(tmp_path / "data"), _tokenizer(tmp_path / "tok")


def _cfg(data, tok, out, **kw) -> TokenizeConfig:
    return TokenizeConfig(data=str(data), tokenizer=str(tok), out=str(out), resolution=32, shard_size=4,
                          batch_size=3, device="cpu", **kw)


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".npy", ".jsonl", ".json")}


def test_tokenize_writes_shards_manifest_and_skips(setup, tmp_path):
    data, tok = setup
    manifest = tokenize_dataset(_cfg(data, tok, tmp_path / "out"), log=lambda *_: None)
    out = tmp_path / "out"
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == GOOD and manifest["lines"] == GOOD + 4
    assert manifest["grid"] == [4, 4] and manifest["resolution"] == 32 and manifest["dtype"] == "uint16"
    assert manifest["skipped_reasons"] == {"bad_json": 1, "missing_file": 1, "no_captions": 1, "unreadable_image": 1}
    assert manifest["visual_tokenizer"]["sha256"] == load_visual_tokenizer(tok).fingerprint()
    assert [s["rows"] for s in manifest["shards"]] == [3, 3, 2, 1]  # shard k = lines [4k, 4k + 4)
    codes = np.concatenate([np.load(out / f"{s['name']}.npy") for s in manifest["shards"]])
    rows = [json.loads(line) for s in manifest["shards"] for line in (out / f"{s['name']}.jsonl").read_text().splitlines()]
    assert codes.dtype == np.uint16 and codes.shape == (GOOD, 4, 4)
    assert [r["captions"] for r in rows] == [[f"short {i}", f"long {i}"] for i in range(GOOD)]
    assert [r["seed"] for r in rows] == list(range(GOOD))
    # The codes are exactly the tokenizer's codes of the centre-cropped, resized image.
    tokenizer = load_visual_tokenizer(tok)
    expected = tokenizer.encode(pil_to_tensor(Image.open(data.parent / "images/7.png"), size=32))
    assert np.array_equal(codes[7], expected[0].numpy())


def test_resume_redoes_only_unfinished_shards(setup, tmp_path):
    data, tok = setup
    out = tmp_path / "out"
    first = tokenize_dataset(_cfg(data, tok, out), log=lambda *_: None)
    before = _files(out)
    # Simulate a run killed while shard 2 was being written: its sidecar and the manifest are missing.
    (out / "manifest.json").unlink()
    (out / "shard-00002.json").unlink()
    (out / "shard-00002.npy").write_bytes(b"half-written")
    mtime = (out / "shard-00000.npy").stat().st_mtime_ns
    messages = []
    again = tokenize_dataset(_cfg(data, tok, out), log=messages.append)
    assert again == first and _files(out) == before
    assert (out / "shard-00000.npy").stat().st_mtime_ns == mtime
    done = [m for m in messages if " done" in m]
    assert len(done) == 1 and done[0].startswith("[rank 0] shard-00002 done")


def test_refuses_another_tokenizer_or_resolution_in_the_same_folder(setup, tmp_path):
    data, tok = setup
    out = tmp_path / "out"
    tokenize_dataset(_cfg(data, tok, out, limit=4), log=lambda *_: None)
    other = _tokenizer(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="another run"):
        tokenize_dataset(_cfg(data, other, out, limit=4), log=lambda *_: None)
    with pytest.raises(ValueError, match="divisible"):
        tokenize_dataset(TokenizeConfig(str(data), str(tok), str(tmp_path / "o2"), resolution=36, device="cpu"))
    with pytest.raises(FileNotFoundError):
        tokenize_dataset(_cfg(tmp_path / "nope.jsonl", tok, tmp_path / "o3"))


def test_torchrun_two_processes_equal_one(setup, tmp_path):
    data, tok = setup
    tokenize_dataset(_cfg(data, tok, tmp_path / "one"), log=lambda *_: None)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun) if torchrun.exists() else "torchrun", "--standalone", "--nproc_per_node=2",
           "-m", "simplear", "data", "tokenize", "--data", str(data), "--tokenizer", str(tok),
           "--out", str(tmp_path / "two"), "--resolution", "32", "--shard-size", "4", "--batch-size", "3",
           "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 1] shard-00001 done" in result.stdout and "[rank 0] shard-00002 done" in result.stdout
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


def test_dataset_reads_shards_and_refuses_mismatches(setup, tmp_path):
    data, tok = setup
    tokenize_dataset(_cfg(data, tok, tmp_path / "out"), log=lambda *_: None)
    tokenizer = load_visual_tokenizer(tok)
    ds = TokenShardDataset(tmp_path / "out", visual_tokenizer=tokenizer, resolution=32)
    assert len(ds) == GOOD and ds.grid == (4, 4)
    item = ds[4]
    assert item["codes"].dtype == torch.long and item["codes"].shape == (4, 4)
    assert item["captions"] == ["short 4", "long 4"]
    assert torch.equal(item["codes"], tokenizer.encode(pil_to_tensor(Image.open(data.parent / "images/4.png"), size=32))[0])
    assert isinstance(ds.folders[0].codes[0], np.memmap)
    with pytest.raises(ValueError, match="another visual tokenizer"):
        TokenShardDataset(tmp_path / "out", visual_tokenizer=_tokenizer(tmp_path / "other", seed=1), resolution=32)
    with pytest.raises(ValueError, match="32 px codes"):
        TokenShardDataset(tmp_path / "out", visual_tokenizer=tok, resolution=64)
    with pytest.raises(FileNotFoundError):
        TokenShardDataset(tmp_path, visual_tokenizer=tok, resolution=32)


def test_a_tokenizer_with_only_another_decoder_reads_the_shards(setup, tmp_path):
    """Codes depend on the encoder alone: a decoder trained with --freeze-encoder keeps shards valid."""
    data, tok = setup
    tokenize_dataset(_cfg(data, tok, tmp_path / "out"), log=lambda *_: None)
    redecoded = load_visual_tokenizer(tok)
    with torch.no_grad():
        for p in redecoded.decoder.parameters():
            p.add_(0.01)
    redecoded.save_pretrained(tmp_path / "redecoded")
    assert len(TokenShardDataset(tmp_path / "out", visual_tokenizer=tmp_path / "redecoded", resolution=32)) == GOOD
    reencoded = load_visual_tokenizer(tok)
    with torch.no_grad():
        next(reencoded.encoder.parameters()).add_(0.01)
    with pytest.raises(ValueError, match="another visual tokenizer .codes_sha256"):
        TokenShardDataset(tmp_path / "out", visual_tokenizer=reencoded, resolution=32)
    # A manifest written before identities had codes_sha256 is held to the whole tokenizer's sha256.
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    del manifest["visual_tokenizer"]["codes_sha256"]
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    assert len(TokenShardDataset(tmp_path / "out", visual_tokenizer=tok, resolution=32)) == GOOD
    with pytest.raises(ValueError, match="another visual tokenizer .sha256"):
        TokenShardDataset(tmp_path / "out", visual_tokenizer=tmp_path / "redecoded", resolution=32)


def test_a_run_begun_before_codes_sha256_resumes(setup, tmp_path):
    data, tok = setup
    out = tmp_path / "out"
    tokenize_dataset(_cfg(data, tok, out, limit=4), log=lambda *_: None)
    rows = len(TokenShardDataset(out, visual_tokenizer=tok, resolution=32))
    (out / "manifest.json").unlink()
    (out / "shard-00000.json").unlink()  # as if killed before the first shard was recorded
    run = json.loads((out / "tokenize.json").read_text())
    del run["visual_tokenizer"]["codes_sha256"]
    (out / "tokenize.json").write_text(json.dumps(run))
    manifest = tokenize_dataset(_cfg(data, tok, out, limit=4), log=lambda *_: None)
    assert "codes_sha256" not in manifest["visual_tokenizer"]
    assert len(TokenShardDataset(out, visual_tokenizer=tok, resolution=32)) == rows


def test_mixture_strategies(setup, tmp_path):
    data, tok = setup
    tokenize_dataset(_cfg(data, tok, tmp_path / "a"), log=lambda *_: None)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ds = TokenShardDataset([(tmp_path / "a", "first:2"), parse_source(f"{tmp_path / 'b'}@end:3")],
                           visual_tokenizer=tok, resolution=32)
    assert ds.source_sizes() == [2, 3]
    assert [ds[i]["captions"][0] for i in range(5)] == ["short 0", "short 1", "short 6", "short 7", "short 8"]
    assert [ds[i]["source"] for i in range(5)] == [0, 0, 1, 1, 1]
    random = TokenShardDataset(TokenSource(str(tmp_path / "a"), "random:4"), visual_tokenizer=tok, resolution=32, seed=3)
    again = TokenShardDataset(TokenSource(str(tmp_path / "a"), "random:4"), visual_tokenizer=tok, resolution=32, seed=3)
    picked = [random[i]["captions"][0] for i in range(len(random))]
    assert len(set(picked)) == 4 and picked == [again[i]["captions"][0] for i in range(4)]


def test_select_rows_rules():
    rng = np.random.default_rng(0)
    assert select_rows("all", 5, rng).tolist() == [0, 1, 2, 3, 4]
    assert select_rows("first:2", 5, rng).tolist() == [0, 1]
    assert select_rows("end:2", 5, rng).tolist() == [3, 4]
    assert select_rows("first:50%", 5, rng).tolist() == [0, 1, 2]  # ceil, like LLaVA/SimpleAR
    assert len(select_rows("40%", 10, rng)) == 4 and len(set(select_rows("random:10", 10, rng))) == 10
    for bad in ("first:6", "sometimes:2", "first:x", "random:150%", "half"):
        with pytest.raises(ValueError):
            select_rows(bad, 5, rng)


def test_cli_tokenize(setup, tmp_path):
    data, tok = setup
    out = tmp_path / "cli"
    assert run_cli("data", "tokenize", "--data", data, "--tokenizer", tok, "--out", out, "--resolution", "32",
                   "--device", "cpu") == 0
    assert json.loads((out / "manifest.json").read_text())["count"] == GOOD
    assert run_cli("data", "tokenize", "--data", tmp_path / "none.jsonl", "--tokenizer", tok, "--out", out,
                   "--resolution", "32") == 2


GREY = (128, 128, 128)


def test_snap_flat_by_hand():
    """A 4 x 4 patch grid of grey with one bright patch at (1, 1): radius 1 snaps the seven patches
    out of reach of it (the border counts as grey), radius 0 all fifteen grey ones; a patch off
    the colour by one level is not flat."""
    images = torch.full((1, 3, 32, 32), 128 / 255 * 2 - 1)
    images[0, :, 8:16, 8:16] = 0.9
    codes = torch.arange(16).view(1, 4, 4)
    snapped, n = snap_flat(codes, images, GREY, 1, 99)
    assert n == 7 and snapped[0, 3].tolist() == [99] * 4 and snapped[0, :3, 3].tolist() == [99] * 3
    assert snapped[0, :3, :3].tolist() == [[0, 1, 2], [4, 5, 6], [8, 9, 10]]
    snapped, n = snap_flat(codes, images, GREY, 0, 99)
    assert n == 15 and snapped[0, 1, 1] == 5 and (snapped == 99).sum() == 15
    images[0, 2, 31, 31] = 129 / 255 * 2 - 1  # one blue value in the bottom-right patch, one level up
    snapped, n = snap_flat(codes, images, GREY, 0, 99)
    assert n == 14 and snapped[0, 3, 3] == 15


def _grey_scenes(root: Path) -> Path:
    """Four 32 px grey images, each with a red 8 x 8 square somewhere else."""
    (root / "images").mkdir(parents=True)
    lines = []
    for i, (y, x) in enumerate([(0, 0), (8, 16), (24, 24), (16, 0)]):
        array = np.full((32, 32, 3), 128, dtype=np.uint8)
        array[y : y + 8, x : x + 8] = (200, 30, 30)
        Image.fromarray(array).save(root / "images" / f"{i}.png")
        lines.append(json.dumps({"image": f"images/{i}.png", "captions": [f"a red square {i}"]}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root / "captions.jsonl"


def test_tokenize_snaps_flat_background_patches(tmp_path):
    """--snap-color: patches away from the square hold the code of a uniform grey image, the others
    what the encoder gave them; the manifest records colour, radius, code and count; the identity
    of shards made without the option is unchanged, and mixing the two in one folder is refused."""
    data, tok = _grey_scenes(tmp_path / "data"), _tokenizer(tmp_path / "tok")
    plain = tokenize_dataset(_cfg(data, tok, tmp_path / "plain"), log=lambda *_: None)
    assert "snap" not in plain and "snap" not in json.loads((tmp_path / "plain" / "tokenize.json").read_text())
    snapped = tokenize_dataset(_cfg(data, tok, tmp_path / "snap", snap_color=GREY), log=lambda *_: None)
    tokenizer = load_visual_tokenizer(tok)
    code = uniform_code(tokenizer, GREY, 32)
    before = np.load(tmp_path / "plain" / "shard-00000.npy").astype(np.int64)
    after = np.load(tmp_path / "snap" / "shard-00000.npy").astype(np.int64)
    images = torch.stack([pil_to_tensor([Image.open(data.parent / "images" / f"{i}.png")])[0] for i in range(4)])
    expected, n = snap_flat(torch.from_numpy(before), images, GREY, 1, code)
    assert n > 0 and (after == expected.numpy()).all()
    changed = after != before
    assert changed.any(), "the tiny encoder should give some far background patch another code than grey's"
    assert (after[changed] == code).all()
    # Patches within one of the square keep their codes (image 0: square at patch (0, 0)).
    assert (after[0, :2, :2] == before[0, :2, :2]).all()
    assert snapped["snap"] == {"color": list(GREY), "radius": 1, "code": code, "snapped": n}
    with pytest.raises(ValueError, match="another run.*snap"):
        tokenize_dataset(_cfg(data, tok, tmp_path / "plain", snap_color=GREY), log=lambda *_: None)
    with pytest.raises(ValueError, match="another run.*snap"):
        tokenize_dataset(_cfg(data, tok, tmp_path / "snap", snap_color=GREY, snap_radius=2), log=lambda *_: None)


def test_snap_options_are_checked(setup, tmp_path):
    data, tok = setup
    for bad in ((128, 128), (0, 0, 256), (1.5, 0, 0)):
        with pytest.raises(ValueError, match="snap_color must be three integers"):
            _cfg(data, tok, tmp_path / "o", snap_color=bad)
    with pytest.raises(ValueError, match="snap_radius"):
        _cfg(data, tok, tmp_path / "o", snap_color=GREY, snap_radius=-1)
    out = tmp_path / "cli"
    assert run_cli("data", "tokenize", "--data", data, "--tokenizer", tok, "--out", out, "--resolution", "32",
                   "--device", "cpu", "--snap-color", "128,128,300") == 2
    assert not out.exists()
    assert run_cli("data", "tokenize", "--data", data, "--tokenizer", tok, "--out", out, "--resolution", "32",
                   "--device", "cpu", "--snap-color", "128,128,128", "--snap-radius", "0") == 0
    assert json.loads((out / "manifest.json").read_text())["snap"]["radius"] == 0


def test_code_stats_script_matches_a_hand_computation(tmp_path):
    """scripts/code_stats.py: on two 2 x 3 images whose rows read 0 0 1, the codes hold 2/3 zeros
    (0.9183 bits), the code right of a 0 is 0 or 1 as often (1 bit), and a folder without a
    manifest is refused by name."""
    script = Path(ROOT) / "scripts" / "code_stats.py"
    folder = tmp_path / "tokens"
    folder.mkdir()
    np.save(folder / "shard-00000.npy", np.array([[[0, 0, 1], [0, 0, 1]]] * 2, dtype=np.uint16))
    (folder / "manifest.json").write_text(json.dumps({"shards": [{"name": "shard-00000", "rows": 2}]}))
    done = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["images"] == 2 and stats["grid"] == [2, 3] and stats["distinct_codes"] == 2
    assert stats["entropy_bits"] == 0.9183 and stats["entropy_given_left_bits"] == 1.0
    assert stats["most_common_share"] == 0.6667
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode != 0 and "has no manifest.json" in done.stderr
