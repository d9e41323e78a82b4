"""ShapesWorld dataset files (`data shapes`) and the on-the-fly stream."""

import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from simplear.data.captions import canonical_prompt
from simplear.data.shapes import COLORS, ShapesConfig
from simplear.data.shapes_dataset import (
    ShapesDatasetConfig,
    ShapesStream,
    image_seed,
    make_example,
    write_shapes_dataset,
)


def _rows(folder):
    return [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]


def test_writes_the_documented_format(tmp_path):
    out = tmp_path / "ds"
    summary = write_shapes_dataset(out, ShapesDatasetConfig(num=12, resolution=64, seed=3, workers=2))
    assert summary["images"] == 12
    rows = _rows(out)
    assert len(rows) == 12
    for i, row in enumerate(rows):
        assert row["image"] == f"images/{i:06d}.png"
        image = Image.open(out / row["image"])
        assert image.size == (64, 64) and image.mode == "RGB"
        assert row["captions"][0] == row["metadata"]["prompt"] == canonical_prompt(row["metadata"])
        assert len(row["captions"]) >= 3
        assert set(row["metadata"]) <= {"tag", "include", "exclude", "prompt"}
        assert isinstance(row["seed"], int)
        assert len(row["objects"]) == sum(c["count"] for c in row["metadata"]["include"])
        # The recorded box holds the object's colour at its centre.
        pixels = np.asarray(image)
        for obj in row["objects"]:
            x0, y0, x1, y1 = obj["box"]
            if obj["class"] in ("circle", "square", "heart"):
                assert tuple(pixels[(y0 + y1) // 2, (x0 + x1) // 2]) == COLORS[obj["color"]]
    config = json.loads((out / "config.json").read_text())
    assert config["num"] == 12 and config["resolution"] == 64 and config["seed"] == 3
    assert [tuple(p) for p in config["shapes"]["heldout"]] == list(ShapesConfig().heldout)
    assert not list(tmp_path.glob(".ds.*"))  # no temporary folder left behind


def test_same_seed_same_bytes_and_seed_remakes_a_row(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_shapes_dataset(a, ShapesDatasetConfig(num=6, resolution=64, seed=9, workers=2))
    write_shapes_dataset(b, ShapesDatasetConfig(num=6, resolution=64, seed=9, workers=1))
    write_shapes_dataset(c, ShapesDatasetConfig(num=6, resolution=64, seed=10, workers=1))
    assert (a / "captions.jsonl").read_bytes() == (b / "captions.jsonl").read_bytes()
    for i in range(6):
        name = f"images/{i:06d}.png"
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "captions.jsonl").read_bytes() != (c / "captions.jsonl").read_bytes()
    row = _rows(a)[4]
    assert row["seed"] == image_seed(9, 4)
    ex = make_example(row["seed"], 64)
    assert np.array_equal(np.asarray(ex.image), np.asarray(Image.open(a / row["image"])))
    assert ex.captions == row["captions"]


def test_heldout_pairs_absent_from_written_data(tmp_path):
    heldout = (("red", "circle"), ("white", "square"))
    write_shapes_dataset(
        tmp_path / "d",
        ShapesDatasetConfig(num=60, resolution=64, workers=1, shapes=ShapesConfig(heldout=heldout)),
    )
    pairs = {(o["color"], o["class"]) for row in _rows(tmp_path / "d") for o in row["objects"]}
    assert not pairs & set(heldout)


def test_refuses_non_empty_folder_and_bad_config(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_shapes_dataset(out, ShapesDatasetConfig(num=2, resolution=64, workers=1))
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="num"):
        ShapesDatasetConfig(num=0)
    with pytest.raises(ValueError, match="resolution"):
        ShapesDatasetConfig(num=1, resolution=8)


def test_cli_data_shapes(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["data", "shapes", "--out", out, "--num", "5", "--resolution", "64", "--seed", "1", "--quiet"]
    assert run_cli(*args) == 0
    assert len(_rows(out)) == 5 and len(list((out / "images").glob("*.png"))) == 5
    assert run_cli(*args) == 2  # non-empty folder
    assert "not empty" in capsys.readouterr().err
    assert run_cli(*args, "--overwrite", "--workers", "1") == 0
    assert run_cli("data", "shapes", "--out", tmp_path / "x", "--num", "2", "--heldout", "teal star") == 2
    assert "heldout colour" in capsys.readouterr().err
    assert (
        run_cli("data", "shapes", "--out", tmp_path / "y", "--num", "3", "--heldout", "none", "--quiet") == 0
    )
    grid = ["data", "shapes", "--out", tmp_path / "g", "--num", "3", "--resolution", "128", "--quiet"]
    assert run_cli(*grid, "--background", "plain", "--grid", "16") == 0
    for row in _rows(tmp_path / "g"):
        assert all(v % 8 == 0 for o in row["objects"] for v in o["box"])  # 128 px / 16 cells
        assert "plain background" in row["captions"][1]
    assert run_cli(*grid[:3], tmp_path / "h", *grid[4:], "--grid", "2") == 2
    assert "grid must be 0" in capsys.readouterr().err
    assert run_cli(*grid[:3], tmp_path / "r", *grid[4:], "--caption-order", "raster") == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["shapes"]["caption_order"] == "raster"


def test_stream_matches_files_and_splits_work(tmp_path):
    write_shapes_dataset(tmp_path / "d", ShapesDatasetConfig(num=4, resolution=64, seed=2, workers=1))
    rows = _rows(tmp_path / "d")
    stream = list(ShapesStream(resolution=64, seed=2, length=4))
    assert [s["captions"] for s in stream] == [r["captions"] for r in rows]
    assert [s["metadata"] for s in stream] == [r["metadata"] for r in rows]
    assert np.array_equal(
        np.asarray(stream[1]["image"]), np.asarray(Image.open(tmp_path / "d" / rows[1]["image"]))
    )
    shards = [
        [s["seed"] for s in ShapesStream(resolution=64, seed=2, length=7, rank=r, world_size=2)]
        for r in (0, 1)
    ]
    everything = [s["seed"] for s in ShapesStream(resolution=64, seed=2, length=7)]
    assert sorted(shards[0] + shards[1]) == sorted(everything) and not set(shards[0]) & set(shards[1])
    endless = iter(ShapesStream(resolution=64, transform=lambda im: np.asarray(im).shape))
    assert [next(endless)["image"] for _ in range(3)] == [(64, 64, 3)] * 3
    with pytest.raises(TypeError):
        len(ShapesStream())


def test_stream_in_dataloader_workers():
    import torch

    stream = ShapesStream(resolution=32, seed=1, length=6)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    seeds = sorted(item["seed"] for item in loader)
    assert seeds == sorted(image_seed(1, i) for i in range(6))


def test_raster_caption_order_changes_only_captions_and_metadata_order(tmp_path):
    given = ShapesConfig(background="plain", grid=16)
    raster = ShapesConfig(background="plain", grid=16, caption_order="raster")
    reordered = 0
    for seed in range(40):
        a, b = make_example(seed, 64, given), make_example(seed, 64, raster)
        assert a.image.tobytes() == b.image.tobytes()
        assert b.captions[0] == b.metadata["prompt"] == canonical_prompt(b.metadata)
        classes = lambda m: sorted(c["class"] for c in m["include"])  # noqa: E731
        assert classes(a.metadata) == classes(b.metadata) and a.metadata["tag"] == b.metadata["tag"]
        reordered += a.metadata != b.metadata
    assert reordered > 0
    with pytest.raises(ValueError, match="caption_order must be one of"):
        ShapesConfig(caption_order="random")


def test_recaption_script_equals_writing_with_that_order(tmp_path):
    """scripts/recaption_shapes.py turns a folder written with one caption order into the folder
    written with the other, row for row (images untouched), and refuses a folder it cannot remake."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "recaption_shapes.py"
    a, b = tmp_path / "a", tmp_path / "b"
    write_shapes_dataset(a, ShapesDatasetConfig(num=16, resolution=64, seed=4, workers=1,
                                                shapes=ShapesConfig(background="plain", grid=16)))
    write_shapes_dataset(b, ShapesDatasetConfig(num=16, resolution=64, seed=4, workers=1,
                                                shapes=ShapesConfig(background="plain", grid=16,
                                                                    caption_order="raster")))
    done = subprocess.run([sys.executable, str(script), str(a), "--order", "raster"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _rows(a) == _rows(b)
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    config = json.loads((a / "config.json").read_text())
    config["shapes"]["grid"] = 0  # settings the rows were not made with
    (a / "config.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, str(script), str(a), "--order", "given"], capture_output=True, text=True)
    assert done.returncode != 0 and "does not come out of the folder's settings" in done.stderr
    assert _rows(a) == _rows(b)  # nothing written
