"""The ShapesWorld prompt suite: GenEval's proportions, schema and phrasing; renders; loading."""

import collections
import itertools
import json
import re

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from simplear.data.shapes import CLASSES, COLORS, DEFAULT_HELDOUT, RELATIONS, relation_holds
from simplear.eval.suite import GENEVAL_TAG_COUNTS, load_prompts, make_suite, render_suite, write_prompts

WORD = "(circle|square|triangle|star|heart|cross)"
COLOR = "(red|orange|yellow|green|blue|purple|pink|brown|black|white)"
ART = "(a|an)"
PATTERNS = {
    "single_object": rf"a photo of {ART} {WORD}",
    "two_object": rf"a photo of {ART} {WORD} and {ART} {WORD}",
    "counting": rf"a photo of (two|three|four) {WORD}e?s",
    "colors": rf"a photo of {ART} {COLOR} {WORD}",
    "position": rf"a photo of {ART} {WORD} ({'|'.join(RELATIONS)}) {ART} {WORD}",
    "color_attr": rf"a photo of {ART} {COLOR} {WORD} and {ART} {COLOR} {WORD}",
}


@pytest.fixture(scope="module")
def suite():
    return make_suite(0)


def test_geneval_tag_proportions_and_order(suite):
    assert len(suite) == 553
    assert collections.Counter(p["tag"] for p in suite) == GENEVAL_TAG_COUNTS
    tags = [t for t, _ in itertools.groupby(p["tag"] for p in suite)]
    assert tags == list(GENEVAL_TAG_COUNTS)  # grouped in GenEval's file order


def test_schema_matches_real_geneval_file(suite, shared_dir):
    real = [json.loads(line) for line in (shared_dir / "benchmarks/geneval/evaluation_metadata.jsonl").open()]
    real_keys = {(p["tag"], tuple(p)) for p in real}
    real_clause_keys = {(p["tag"], tuple(tuple(c) for c in p["include"])) for p in real}
    for p in suite:
        keys = tuple(k for k in p if k != "heldout")
        assert (p["tag"], keys) in real_keys, p
        assert (p["tag"], tuple(tuple(c) for c in p["include"])) in real_clause_keys, p
        if p["tag"] == "position":  # GenEval's form: include[1] is placed relative to include[0]
            assert p["include"][1]["position"][1] == 0
            assert p["prompt"].split(" of ", 1)[1].startswith("a " + p["include"][1]["class"])
        if p["tag"] == "counting":
            assert p["exclude"] == [
                {"class": p["include"][0]["class"], "count": p["include"][0]["count"] + 1}
            ]


def test_canonical_phrasings(suite):
    for p in suite:
        assert re.fullmatch(PATTERNS[p["tag"]], p["prompt"]), p["prompt"]
        assert " a orange" not in p["prompt"] and " an red" not in p["prompt"]


def test_balanced_coverage_and_heldout_marks(suite):
    colors = {(c["color"], c["class"]) for p in suite if p["tag"] == "colors" for c in p["include"]}
    assert colors == set(itertools.product(COLORS, CLASSES))  # all 60 pairs, held-out ones included
    counting = {(p["include"][0]["class"], p["include"][0]["count"]) for p in suite if p["tag"] == "counting"}
    assert counting == set(itertools.product(CLASSES, (2, 3, 4)))
    assert {p["include"][1]["position"][0] for p in suite if p["tag"] == "position"} == set(RELATIONS)
    held = set(DEFAULT_HELDOUT)
    for p in suite:
        uses = any((c.get("color"), c["class"]) in held for c in p["include"])
        assert p.get("heldout", False) == uses
    for p in suite:
        if p["tag"] in ("two_object", "position", "color_attr"):
            assert p["include"][0]["class"] != p["include"][1]["class"]
        if p["tag"] == "color_attr":
            assert p["include"][0]["color"] != p["include"][1]["color"]


def test_deterministic_by_seed():
    assert make_suite(3) == make_suite(3)
    assert make_suite(3) != make_suite(4)
    assert not any(p.get("heldout") for p in make_suite(0, heldout=()))


def test_load_prompts_round_trip_and_errors(suite, tmp_path):
    path = tmp_path / "suite.jsonl"
    write_prompts(path, suite)
    assert load_prompts(path) == suite
    bad = dict(suite[300])
    bad["include"] = [{"class": "dog", "count": 1}] + bad["include"][1:]
    path.write_text(json.dumps(suite[0]) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(
        ValueError, match=r":3: include\[0\]\.class: unknown class 'dog'; allowed: circle, square"
    ):
        load_prompts(path)
    path.write_text('{"tag": "colors", "include": [{"class": "star", "count": 1, "color": "teal"}]}\n')
    with pytest.raises(ValueError, match=r"include\[0\]\.color: unknown color 'teal'; allowed: red, orange"):
        load_prompts(path)
    path.write_text('{"tag": "colors", "include": [{"class": "star", "count": 1, "color": "red"}]}\n')
    assert load_prompts(path)[0]["prompt"] == "a photo of a red star"  # missing prompt filled in
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=":1: not valid JSON"):
        load_prompts(path)
    path.write_text('{"include": [{"class": "star", "count": 1}]}\n')
    with pytest.raises(ValueError, match="tag: missing"):
        load_prompts(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts(path)
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "nope.jsonl")


def test_real_geneval_prompts_are_refused_with_a_clear_error(shared_dir):
    with pytest.raises(
        ValueError, match=r"evaluation_metadata.jsonl:1: include\[0\]\.class: unknown class 'bench'"
    ):
        load_prompts(shared_dir / "benchmarks/geneval/evaluation_metadata.jsonl")


def test_render_suite_layout_and_ground_truth(suite, tmp_path):
    picked = [next(p for p in suite if p["tag"] == tag) for tag in GENEVAL_TAG_COUNTS]
    picked.append(next(p for p in suite if p.get("heldout")))
    out = tmp_path / "renders"
    summary = render_suite(picked, out, resolution=64, images_per_prompt=2, seed=5)
    assert summary == {"out": str(out), "prompts": 7, "images": 14}
    assert sorted(d.name for d in out.iterdir()) == [f"{i:05d}" for i in range(7)]
    for i, prompt in enumerate(picked):
        folder = out / f"{i:05d}"
        assert [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()] == [prompt]
        assert sorted(f.name for f in (folder / "samples").iterdir()) == ["0000.png", "0001.png"]
        a, b = (np.asarray(Image.open(folder / "samples" / n)) for n in ("0000.png", "0001.png"))
        assert a.shape == (64, 64, 3) and not np.array_equal(a, b)  # two different renders
    again = tmp_path / "again"
    render_suite(picked, again, resolution=64, images_per_prompt=2, seed=5)
    assert (again / "00003/samples/0001.png").read_bytes() == (out / "00003/samples/0001.png").read_bytes()
    with pytest.raises(ValueError, match="not empty"):
        render_suite(picked, out, resolution=64)
    with pytest.raises(ValueError, match="images_per_prompt"):
        render_suite(picked, tmp_path / "z", resolution=64, images_per_prompt=0)


def test_whole_suite_renders_and_satisfies_relations():
    from simplear.data.shapes import scene_from_metadata

    for i, p in enumerate(make_suite(1)):
        scene = scene_from_metadata(p, np.random.default_rng([1, i, 0]))
        for j, clause in enumerate(p["include"]):
            assert sum(o.cls == clause["class"] for o in scene.objects) == clause["count"]
            if "position" in clause:
                rel, ref = clause["position"]
                assert relation_holds(scene.objects[j].box(64), scene.objects[ref].box(64), rel, 0.15)


def test_cli_suite_and_render(tmp_path, capsys):
    prompts = tmp_path / "suite.jsonl"
    assert run_cli("eval", "suite", "--out", prompts, "--seed", "2") == 0
    assert load_prompts(prompts) == make_suite(2)
    small = tmp_path / "small.jsonl"
    small.write_text("".join(prompts.read_text().splitlines(keepends=True)[::100]))
    out = tmp_path / "r"
    args = [
        "eval",
        "render",
        "--prompts",
        small,
        "--out",
        out,
        "--resolution",
        "64",
        "--images-per-prompt",
        "1",
    ]
    assert run_cli(*args) == 0
    assert len(list(out.glob("*/samples/0000.png"))) == 6
    assert run_cli(*args) == 2 and "not empty" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tag": "colors", "include": [{"class": "hexagon", "count": 1}], "prompt": "x"}\n')
    assert run_cli("eval", "render", "--prompts", bad, "--out", tmp_path / "b", "--resolution", "64") == 2
    err = capsys.readouterr().err
    assert "include[0].class" in err and "circle, square, triangle, star, heart, cross" in err
    assert (
        run_cli(
            "eval",
            "render",
            "--prompts",
            tmp_path / "missing.jsonl",
            "--out",
            tmp_path / "m",
            "--resolution",
            "64",
        )
        == 2
    )
