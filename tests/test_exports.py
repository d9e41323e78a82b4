"""GenEval and DPG-Bench exports: exact layouts, per-image seeds, resume, errors, the CLI verbs."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from PIL import Image
from test_server import FakePipeline, colour, one_torch_thread, shared_pipeline  # noqa: F401

from simplear.eval.exports import ExportConfig, export_dpg, export_geneval, image_seed, make_grid


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return shared_pipeline(tmp_path_factory)


def test_geneval_layout_on_the_real_metadata(shared_dir, tmp_path, pipe):
    prompts = shared_dir / "benchmarks" / "geneval" / "evaluation_metadata.jsonl"
    raw = prompts.read_text().splitlines()
    summary = export_geneval(pipe, prompts, tmp_path / "a", ExportConfig(images_per_prompt=2, batch_size=3, limit=5))
    assert summary["prompts"] == 5 and summary["generated_prompts"] == 5
    made = summary["sampling"]  # plain AR: one image token per forward pass
    assert made["images"] == 10 and made["tokens_per_forward"] == 1.0 and made["seconds_per_image"] > 0
    folders = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert folders == ["00000", "00001", "00002", "00003", "00004"]
    for i, name in enumerate(folders):
        folder = tmp_path / "a" / name
        assert (folder / "metadata.jsonl").read_text() == raw[i] + "\n"  # the line, verbatim
        samples = sorted(p.name for p in (folder / "samples").iterdir())
        assert samples == ["0000.png", "0001.png"]
        size = int(pipe.config.image_size)
        assert Image.open(folder / "samples" / "0001.png").size == (size, size)
    # Another batch size gives the same images: each image has its own seed.
    export_geneval(pipe, prompts, tmp_path / "b", ExportConfig(images_per_prompt=2, batch_size=4, limit=5))
    for name in folders:
        for s in ("0000.png", "0001.png"):
            a = (tmp_path / "a" / name / "samples" / s).read_bytes()
            assert a == (tmp_path / "b" / name / "samples" / s).read_bytes()


def test_geneval_reports_jacobi_tokens_per_forward_pass(tmp_path, pipe):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a photo of a red circle", "tag": "single_object"}) + "\n")
    summary = export_geneval(pipe, prompts, tmp_path / "j", ExportConfig(images_per_prompt=2, sampler="jacobi"))
    made = summary["sampling"]
    assert made["images"] == 2 and made["tokens_per_forward"] >= 1.0


def test_geneval_resumes_and_refuses_a_different_export(tmp_path):
    pipe = FakePipeline()
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"a photo of {i} cats", "tag": "counting"}) + "\n"
                               for i in range(4)))
    out = tmp_path / "out"
    export_geneval(pipe, prompts, out, ExportConfig(images_per_prompt=2, limit=2))
    calls = len(pipe.calls)
    summary = export_geneval(pipe, prompts, out, ExportConfig(images_per_prompt=2))
    assert summary["skipped_prompts"] == 2 and summary["generated_prompts"] == 2
    # Only the two missing prompts were sampled.
    assert sum(len(c["prompts"]) for c in pipe.calls[calls:]) == 4
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": "something else"}) + "\n")
    with pytest.raises(ValueError, match="another prompt"):
        export_geneval(pipe, other, out)


def test_dpg_grids_on_the_real_prompts(shared_dir, tmp_path, pipe):
    prompts = shared_dir / "benchmarks" / "dpg" / "prompts.jsonl"
    lines = [json.loads(line) for line in prompts.read_text().splitlines()[:3]]
    summary = export_dpg(pipe, prompts, tmp_path, ExportConfig(limit=3, batch_size=5, seed=2))
    size = int(pipe.config.image_size)
    assert summary["resolution"] == size
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{line['id']}.png" for line in lines)
    grid = Image.open(tmp_path / f"{lines[1]['id']}.png")
    assert grid.size == (2 * size, 2 * size)


def test_dpg_grid_quadrants_are_the_four_seeded_samples(tmp_path):
    pipe = FakePipeline()
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "x1", "prompt": "a cat"}) + "\n")
    export_dpg(pipe, prompts, tmp_path / "out", ExportConfig(seed=9))
    grid = Image.open(tmp_path / "out" / "x1.png").convert("RGB")
    corners = [(0, 0), (32, 0), (0, 32), (32, 32)]
    assert [grid.getpixel(c) for c in corners] == [colour("a cat", image_seed(9, 0, k)) for k in range(4)]


def test_make_grid_and_bad_inputs(tmp_path):
    ims = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(4)]
    assert make_grid(ims).size == (8, 8)
    with pytest.raises(ValueError, match="same size"):
        make_grid([Image.new("RGB", (4, 4)), Image.new("RGB", (5, 5))])
    pipe = FakePipeline()
    bad = tmp_path / "bad.jsonl"
    for text, match in [("{oops\n", "not valid JSON"), ("[1]\n", "JSON object"), ('{"id": "a"}\n', "prompt"),
                        ('{"id": "../x", "prompt": "p"}\n', "file name"),
                        ('{"id": "a", "prompt": "p"}\n{"id": "a", "prompt": "q"}\n', "duplicate")]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            export_dpg(pipe, bad, tmp_path / "o")
    with pytest.raises(FileNotFoundError):
        export_geneval(pipe, tmp_path / "missing.jsonl", tmp_path / "o")
    with pytest.raises(ValueError, match="images_per_prompt"):
        ExportConfig(images_per_prompt=0)


def test_cli_geneval_real_file_writes_layout_and_exits_0(shared_dir, tmp_path, monkeypatch, capsys, pipe):
    import simplear.cli.exports as cli

    monkeypatch.setattr(cli, "_pipeline", lambda args: pipe)
    prompts = shared_dir / "benchmarks" / "geneval" / "evaluation_metadata.jsonl"
    # The whole file: 553 prompt folders, 00000 .. 00552, each with its line verbatim.
    code = run_cli("eval", "geneval", "--prompts", prompts, "--out", tmp_path / "g",
                   "--images-per-prompt", "1", "--seed", "1", "--batch-size", "64")
    assert code == 0
    out = capsys.readouterr().out
    assert "GenEval's" in out and "detector" in out
    folders = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert folders == [f"{i:05d}" for i in range(553)]
    last = prompts.read_text().splitlines()[-1]
    assert (tmp_path / "g" / "00552" / "metadata.jsonl").read_text() == last + "\n"
    assert (tmp_path / "g" / "00552" / "samples" / "0000.png").is_file()

    code = run_cli("eval", "dpg", "--prompts", shared_dir / "benchmarks" / "dpg" / "prompts.jsonl",
                   "--out", tmp_path / "d", "--limit", "1")
    assert code == 0
    assert f"resolution: {int(pipe.config.image_size)}" in capsys.readouterr().out
    assert run_cli("eval", "dpg", "--prompts", tmp_path / "nope.jsonl", "--out", tmp_path / "d") == 2


class RenderPipeline(FakePipeline):
    """Draws the ground truth of each prompt's ShapesWorld line: a perfect model, for the judge."""

    def __init__(self, lines):
        super().__init__(image_size=128)
        self.by_prompt = {line["prompt"]: line for line in lines}

    def __call__(self, prompts, seed=0, **kwargs):
        import numpy as np

        from simplear.data.shapes import render_scene, scene_from_metadata

        images = [render_scene(scene_from_metadata(self.by_prompt[p], np.random.default_rng(s)), 128)
                  for p, s in zip(prompts, seed)]
        return type("Out", (), {"images": images})


def test_cli_geneval_scores_shapesworld_prompts(tmp_path, monkeypatch, capsys):
    import simplear.cli.exports as cli
    from simplear.eval.suite import make_suite, write_prompts

    suite = make_suite(0)
    lines = [suite[i] for i in (0, 100, 200, 300, 400, 500)]  # one or more of each tag
    prompts = write_prompts(tmp_path / "shapes.jsonl", lines)
    monkeypatch.setattr(cli, "_pipeline", lambda args: RenderPipeline(lines))
    code = run_cli("eval", "geneval", "--prompts", prompts, "--out", tmp_path / "g",
                   "--images-per-prompt", "2", "--json")
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["images"] == 12 and summary["overall"] > 0.9
    assert any(line.startswith("overall") for line in out)
    assert (tmp_path / "g" / "results.jsonl").is_file()
