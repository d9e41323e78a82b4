"""Issue 2's calibration targets for the judge, on a subset of the suite (the full table is
`simplear eval calibrate`, recorded in docs/benchmarks.md)."""

import json

import numpy as np
import pytest
from conftest import run_cli

from simplear.eval.calibrate import CORRUPTIONS, CalibrationConfig, calibrate, corrupt
from simplear.eval.suite import make_suite


@pytest.fixture(scope="module")
def report():
    # 10 prompts of each tag, every resolution the issue names.
    return calibrate(CalibrationConfig(resolutions=(64, 128, 256), per_tag=10, seed=0))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_ground_truth_renders_score_at_least_098(report, index):
    result = report["results"][index]
    assert result["images"] == 60
    assert result["ground_truth"]["overall"] >= 0.98, result["failures"]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_corrupted_specs_are_rarely_judged_correct(report, index):
    corrupted = report["results"][index]["corrupted"]
    assert corrupted["images"] >= 100
    assert all(corrupted["kinds"][k]["images"] > 0 for k in CORRUPTIONS)
    assert corrupted["rate"] <= 0.02, report["results"][index]["failures"]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_mild_degradations_cost_at_most_003(report, index):
    for kind, value in report["results"][index]["degraded"].items():
        assert value["cost"] <= 0.03, (kind, value)


def test_each_corruption_really_changes_the_spec():
    suite = make_suite(0)
    rng = np.random.default_rng(0)
    by_tag = {line["tag"]: line for line in suite}
    color = corrupt(by_tag["colors"], "color", rng)
    assert color["include"][0]["color"] != by_tag["colors"]["include"][0]["color"]
    count = corrupt(by_tag["counting"], "count", rng)
    assert abs(count["include"][0]["count"] - by_tag["counting"]["include"][0]["count"]) == 1
    cls = corrupt(by_tag["two_object"], "class", rng)
    assert {c["class"] for c in cls["include"]} != {c["class"] for c in by_tag["two_object"]["include"]}
    relation = corrupt(by_tag["position"], "relation", rng)
    assert relation["include"][1]["position"][0] != by_tag["position"]["include"][1]["position"][0]
    swap = corrupt(by_tag["color_attr"], "swap", rng)
    assert [c["color"] for c in swap["include"]] == [c["color"] for c in by_tag["color_attr"]["include"]][::-1]
    assert corrupt(by_tag["single_object"], "relation", rng) is None
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(by_tag["colors"], "rotate", rng)


def test_calibrate_cli_prints_tables_and_json(capsys):
    assert run_cli("eval", "calibrate", "--resolutions", "64", "--per-tag", "2", "--json") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("| **overall** |") for line in out)
    summary = json.loads(out[-1])
    assert summary["results"]["64"]["ground_truth"] >= 0.98
