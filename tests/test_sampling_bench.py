"""`simplear bench sampling`: the four samplers run on one tiny model and report every figure."""

import json

import pytest
from conftest import run_cli
from sampling_helpers import one_torch_thread  # noqa: F401  (autouse fixture)

from simplear.sampling.bench import BenchConfig


def test_bench_reports_rows_for_every_sampler_and_batch(capsys):
    code = run_cli("bench", "sampling", "--preset", "tiny", "--image-size", "32", "--batch-sizes", "1,2",
                   "--window", "4", "--device", "cpu", "--json")
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["rows"]
    assert [(r["sampler"], r["batch"]) for r in rows] == [
        (s, b) for b in (1, 2) for s in ("baseline", "reference", "engine", "jacobi")
    ]
    for row in rows:
        assert row["tokens_per_image"] == 16 and row["seconds_per_image"] > 0
        assert row["image_tokens_per_second"] > 0 and row["peak_memory_mb"] > 0
        assert row["forward_passes_per_image"] <= 16
    assert {"engine_vs_baseline_batch1", "jacobi_vs_baseline_batch2"} <= set(result["speedups"])


def test_bench_config_rejects_bad_input(capsys):
    with pytest.raises(ValueError):
        BenchConfig(samplers=("beam",))
    with pytest.raises(ValueError):
        BenchConfig(preset="huge")
    assert run_cli("bench", "sampling", "--preset", "tiny", "--batch-sizes", "0") == 2
    assert "batch sizes" in capsys.readouterr().err


def test_bench_samples_a_bundle_with_its_own_settings(tmp_path, capsys):
    from pipeline_helpers import make_tiny_bundle

    make_tiny_bundle(tmp_path / "bundle")  # stores CFG 3.0, temperature 1.0
    args = ("bench", "sampling", "--model", str(tmp_path / "bundle"), "--batch-sizes", "1",
            "--samplers", "engine,jacobi", "--device", "cpu", "--json")
    assert run_cli(*args) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert (settings["cfg_scale"], settings["temperature"], settings["top_k"]) == (3.0, 1.0, 0)
    assert run_cli(*args, "--cfg-scale", "5", "--temperature", "0.5") == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert (settings["cfg_scale"], settings["temperature"]) == (5.0, 0.5)
    assert run_cli(*args, "--temperature", "-1") == 2
    assert "temperature" in capsys.readouterr().err
