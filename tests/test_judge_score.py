"""`score_folder` and `simplear eval score` on GenEval's folder layout."""

import json

import pytest
from conftest import run_cli

from simplear.eval.calibrate import select_prompts
from simplear.eval.score import ScoreConfig, score_folder
from simplear.eval.suite import make_suite, render_suite

FIELDS = {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    prompts = [line for _, line in select_prompts(make_suite(0), 2)]  # 2 per tag = 12 prompts
    out = tmp_path_factory.mktemp("score") / "run"
    render_suite(prompts, out, resolution=64, images_per_prompt=2, seed=0)
    return out, prompts


def test_ground_truth_folder_scores_perfectly_and_writes_results(rendered, capsys):
    out, prompts = rendered
    summary = score_folder(out)
    assert summary["overall"] == 1.0 and summary["images"] == 24
    assert set(summary["tags"]) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and all(FIELDS <= set(row) for row in rows)
    assert rows[0]["filename"].endswith("00000/samples/0000.png")
    assert rows[0]["metadata"] == prompts[0] and rows[0]["prompt"] == prompts[0]["prompt"]
    assert rows[0]["correct"] is True and rows[0]["details"]["detections"]

    assert run_cli("eval", "score", out, "--json") == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    parsed = json.loads(last)
    assert set(parsed) == {"overall", "tags", "images"} and parsed["images"] == 24 and parsed["overall"] == 1.0


def test_missing_and_unreadable_images_are_incorrect_not_fatal(rendered, tmp_path):
    import shutil

    src, prompts = rendered
    out = tmp_path / "broken"
    shutil.copytree(src, out)
    (out / "00000/samples/0000.png").write_bytes(b"not a png at all")
    (out / "00001/samples/0001.png").write_bytes((out / "00001/samples/0001.png").read_bytes()[:60])  # truncated
    shutil.rmtree(out / "00002/samples")
    summary = score_folder(out)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    bad = [r for r in rows if not r["correct"]]
    assert len(rows) == 23 and len(bad) == 3
    assert bad[0]["reason"].startswith("unreadable image") and bad[1]["reason"].startswith("unreadable image")
    assert bad[2]["reason"].startswith("missing") and bad[2]["filename"].endswith("00002/samples")
    # Tag single_object holds prompts 0 and 1: 4 images, 2 unreadable, and prompt 2 is two_object.
    assert summary["tags"]["single_object"] == pytest.approx(0.5)
    assert summary["tags"]["two_object"] == pytest.approx(2 / 3)


def test_bad_folders_are_clear_errors(tmp_path, capsys):
    assert run_cli("eval", "score", tmp_path / "nowhere") == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_cli("eval", "score", tmp_path) == 2
    assert "no prompt folders" in capsys.readouterr().err
    (tmp_path / "00000/samples").mkdir(parents=True)
    (tmp_path / "00000/metadata.jsonl").write_text(json.dumps({"tag": "colors", "include": [{"class": "dog", "count": 1}]}))
    assert run_cli("eval", "score", tmp_path) == 2
    err = capsys.readouterr().err
    assert "00000" in err and "unknown class 'dog'" in err and "circle" in err


def test_two_processes_give_the_same_rows(tmp_path):
    prompts = [line for _, line in select_prompts(make_suite(1), 6)]  # 36 prompts x 2 = 72 images
    render_suite(prompts, tmp_path / "run", resolution=64, images_per_prompt=2, seed=1)
    serial = score_folder(tmp_path / "run")
    rows1 = (tmp_path / "run/results.jsonl").read_text()
    parallel = score_folder(tmp_path / "run", ScoreConfig(processes=2))
    assert (tmp_path / "run/results.jsonl").read_text() == rows1
    assert parallel["overall"] == serial["overall"] >= 0.98
