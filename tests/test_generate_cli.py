"""`simplear generate`: PNGs plus generate.json from a tiny bundle; bad input exits with code 2."""

import json
import shutil

import pytest
from conftest import run_cli
from PIL import Image
from pipeline_helpers import make_tiny_bundle
from sampling_helpers import one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def test_generate_writes_pngs_and_sidecar(bundle_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_cli("generate", "a photo of two red circles", "three yellow hearts", "--out", out,
                   "--model", bundle_dir, "--num-images", "2", "--seed", "3", "--top-k", "5",
                   "--device", "cpu", "--sampler", "jacobi")
    assert code == 0
    sidecar = json.loads((out / "generate.json").read_text())
    assert len(sidecar["images"]) == 4
    assert [r["seed"] for r in sidecar["images"]] == [3, 4, 5, 6]
    settings = sidecar["settings"]
    assert settings["top_k"] == 5 and settings["cfg_scale"] == 3.0 and settings["sampler"] == "jacobi"
    assert settings["image_size"] == 16 and settings["num_images"] == 2
    assert settings["kernels"] == "torch"  # auto on a CPU
    for record in sidecar["images"]:
        image = Image.open(out / record["file"])
        assert image.size == (16, 16)
    printed = capsys.readouterr().out.split()
    assert len(printed) == 4 and all(p.endswith(".png") for p in printed)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compile_flag_gives_the_same_greedy_images(bundle_dir, tmp_path):
    common = ["a photo of two red circles", "--model", bundle_dir, "--num-images", "2", "--top-k", "1",
              "--device", "cpu", "--json"]
    assert run_cli("generate", *common, "--out", tmp_path / "eager") == 0
    assert run_cli("generate", *common, "--out", tmp_path / "compiled", "--compile") == 0
    eager = json.loads((tmp_path / "eager" / "generate.json").read_text())
    compiled = json.loads((tmp_path / "compiled" / "generate.json").read_text())
    assert compiled["settings"]["compile"] is True and eager["settings"]["compile"] is False
    for a, b in zip(eager["images"], compiled["images"]):
        assert (tmp_path / "eager" / a["file"]).read_bytes() == (tmp_path / "compiled" / b["file"]).read_bytes()


@pytest.mark.parametrize(
    "extra",
    [
        ["--temperature", "-1"],
        ["--top-p", "0"],
        ["--top-p", "1.5"],
        ["--image-size", "18"],
        ["--num-images", "0"],
        ["--kernels", "triton"],  # the Triton decode kernels need CUDA
    ],
)
def test_bad_settings_exit_2(bundle_dir, tmp_path, capsys, extra):
    code = run_cli("generate", "three yellow hearts", "--out", tmp_path / "o", "--model", bundle_dir,
                   "--device", "cpu", *extra)
    assert code == 2
    assert "simplear: error:" in capsys.readouterr().err
    assert not (tmp_path / "o" / "generate.json").exists()


def test_empty_and_too_long_prompts_exit_2(bundle_dir, tmp_path, capsys):
    assert run_cli("generate", "", "--out", tmp_path / "o", "--model", bundle_dir, "--device", "cpu") == 2
    assert "empty prompt" in capsys.readouterr().err
    assert run_cli("generate", "red " * 200, "--out", tmp_path / "o", "--model", bundle_dir, "--device", "cpu") == 2
    assert "context" in capsys.readouterr().err


def test_missing_model_folder_exits_2(tmp_path, capsys):
    assert run_cli("generate", "a red circle", "--out", tmp_path / "o", "--model", tmp_path / "nope",
                   "--device", "cpu") == 2
    assert "simplear: error:" in capsys.readouterr().err


def test_without_out_each_run_gets_a_fresh_folder(bundle_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert run_cli("generate", "a red circle", "--model", bundle_dir, "--device", "cpu") == 0
    printed = capsys.readouterr().out.split()
    assert printed[0].startswith("outputs/0001/") and printed[1].startswith("outputs/0002/")
    assert (tmp_path / "outputs" / "0001" / "generate.json").is_file()
    assert (tmp_path / "outputs" / "0002" / "generate.json").is_file()  # the first run is kept
