"""The one-command ShapesWorld recipe on its smoke configuration: every stage runs, is evaluated,
lands in the stage table, and a re-run continues instead of starting over."""

import dataclasses
import json

import pytest
import torch
from conftest import run_cli


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory):
    # One thread: the models are tiny and two threads oversubscribe a shared 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("recipe") / "shapes"
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "sft") == 0
    yield out
    torch.set_num_threads(before)


def _rows(out):
    return {r["stage"]: r for r in json.loads((out / "stages.json").read_text())["stages"]}


def test_stages_up_to_sft_ran_and_were_evaluated(recipe_dir):
    for stage in ("data", "tokenizer", "tokens", "pretrain", "sft"):
        assert (recipe_dir / "stages" / f"{stage}.json").is_file()
    assert not (recipe_dir / "stages" / "grpo.json").exists()
    rows = _rows(recipe_dir)
    assert set(rows) == {"tokenizer", "pretrain", "sft"}
    for stage in ("pretrain", "sft"):
        assert 0.0 <= rows[stage]["overall"] <= 1.0
        assert rows[stage]["images"] == 6  # smoke: 6 prompts x 1 image
        assert (recipe_dir / "samples" / f"{stage}.png").is_file()
    # The smoke suite is spread over the tags, not the first six prompts of one tag.
    assert len(rows["sft"]["tags"]) >= 4
    sft = json.loads((recipe_dir / "sft" / "bundle" / "simplear.json").read_text())
    pre = json.loads((recipe_dir / "pretrain" / "bundle" / "simplear.json").read_text())
    assert (pre["image_size"], sft["image_size"]) == (32, 64)  # low resolution, then high
    # The sampling sweep judged both smoke candidates and stored the winner as the SFT defaults.
    sweep = json.loads((recipe_dir / "stages" / "sft.json").read_text())["sampling_sweep"]
    assert [(c["cfg_scale"], c["temperature"]) for c in sweep["candidates"]] == [(2.0, 1.0), (3.0, 0.7)]
    best = max(sweep["candidates"], key=lambda c: (c["overall"], c["partial"]))
    assert sweep["chosen"] == {"cfg_scale": best["cfg_scale"], "temperature": best["temperature"]}
    assert (sft["sampling"]["cfg_scale"], sft["sampling"]["temperature"]) == (best["cfg_scale"], best["temperature"])
    assert "| sft |" in (recipe_dir / "stages.md").read_text()
    targets = json.loads((recipe_dir / "stages.json").read_text())["targets"]
    assert targets[0]["target"] == "sft overall >= 0.80" and targets[0]["value"] == rows["sft"]["overall"]
    assert targets[2]["met"] is None  # no GRPO stage yet


def test_rerun_continues_with_grpo_and_resumes_an_interrupted_stage(recipe_dir, capsys, monkeypatch):
    marker = recipe_dir / "stages" / "sft.json"
    before = marker.stat().st_mtime_ns
    assert run_cli("recipe", "shapes", "--out", recipe_dir, "--smoke") == 0
    out = capsys.readouterr().out
    assert "sft done earlier, skipped" in out and "stage grpo" in out
    assert marker.stat().st_mtime_ns == before  # finished stages are not redone
    rows = _rows(recipe_dir)
    assert list(rows) == ["tokenizer", "pretrain", "sft", "grpo"]
    saved = json.loads((recipe_dir / "grpo" / "bundle" / "simplear.json").read_text())
    sft = json.loads((recipe_dir / "sft" / "bundle" / "simplear.json").read_text())
    assert saved["sampling"]["cfg_scale"] == sft["sampling"]["cfg_scale"]  # evaluated as optimised
    log = [json.loads(line) for line in (recipe_dir / "grpo" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2]

    # The model card quotes the command, holds the stage table and shows the pictures it made.
    card = (recipe_dir / "MODEL_CARD.md").read_text()
    assert f"simplear recipe shapes --out {recipe_dir} --smoke" in card and "| grpo |" in card
    assert "samples/stages.png" in card and (recipe_dir / "samples" / "stages.png").is_file()
    assert "32 at 64 px, plain background, boxes on a 16 x 16 grid" in card
    assert ("4 steps on 32-px crops of images at 32 and 64 px, then 2 on whole images at 32 px; "
            "per-position normalisation (batch") in card
    from PIL import Image

    picture = Image.open(recipe_dir / "samples" / "stages.png")
    assert picture.height == 24 + 6 * 64  # a label row + one row per grid prompt at the SFT size
    assert (recipe_dir / "grpo" / "curves.png").is_file() and "grpo/curves.png" in card
    # Without matplotlib the card says why the curves are missing (and how to draw them).
    import simplear.train.plot as plot_module
    from simplear.train.model_card import write_model_card

    def no_matplotlib(*args, **kwargs):
        raise ValueError("simplear plot needs matplotlib")

    with monkeypatch.context() as patch:
        patch.setattr(plot_module, "plot_run", no_matplotlib)
        bare = write_model_card(recipe_dir, "simplear recipe shapes --smoke").read_text()
    assert "GRPO curves: not drawn, matplotlib is not installed" in bare and "![GRPO curves]" not in bare
    write_model_card(recipe_dir, f"simplear recipe shapes --out {recipe_dir} --smoke")

    # An interrupted GRPO stage (no marker, checkpoints on disk) resumes from its checkpoint.
    (recipe_dir / "stages" / "grpo.json").unlink()
    assert run_cli("recipe", "shapes", "--out", recipe_dir, "--smoke") == 0
    assert "resumed from" in capsys.readouterr().out
    assert (recipe_dir / "stages" / "grpo.json").is_file()

    # An interrupted SFT stage started under other defaults of the named recipe (the saved
    # config.json differs from what shapes-sft gives today) continues with its own settings.
    sft_config = recipe_dir / "sft" / "config.json"
    original = sft_config.read_text()
    started = json.loads(original)
    started["optim"]["warmup_steps"] += 7
    sft_config.write_text(json.dumps(started))
    (recipe_dir / "stages" / "sft.json").unlink()
    assert run_cli("recipe", "shapes", "--out", recipe_dir, "--smoke") == 0
    assert "sft continues with the settings it started with" in capsys.readouterr().out
    assert json.loads(sft_config.read_text())["optim"]["warmup_steps"] == started["optim"]["warmup_steps"]
    assert (recipe_dir / "stages" / "sft.json").is_file()
    sft_config.write_text(original)
    # The same for the tokenizer stage, when the named tokenizer recipe's defaults change under it.
    from simplear.train.tokenizer import RECIPES
    from simplear.visual_tokenizers import load_visual_tokenizer

    tok_weights = load_visual_tokenizer(recipe_dir / "tokenizer").fingerprint()
    (recipe_dir / "stages" / "tokenizer.json").unlink()
    with monkeypatch.context() as patch:
        patch.setitem(RECIPES["shapes"], "warmup", RECIPES["shapes"]["warmup"] + 1)
        assert run_cli("recipe", "shapes", "--out", recipe_dir, "--smoke") == 0
    assert "tokenizer continues with the settings it started with" in capsys.readouterr().out
    assert load_visual_tokenizer(recipe_dir / "tokenizer").fingerprint() == tok_weights  # the same weights
    assert (recipe_dir / "stages" / "tokenizer.json").is_file()

    # A folder written before a setting existed continues while that setting keeps its default.
    saved = json.loads((recipe_dir / "recipe.json").read_text())
    del saved["tokenizer_recipe"]  # the smoke run keeps its default
    (recipe_dir / "recipe.json").write_text(json.dumps(saved))
    assert run_cli("recipe", "shapes", "--out", recipe_dir, "--smoke") == 0

    # A folder from before the training-scene settings existed drew textured scenes anywhere:
    # it is read as such, so the new plain-grid default does not silently continue it.
    saved = json.loads((recipe_dir / "recipe.json").read_text())
    assert (saved["data_background"], saved["data_grid"]) == ("plain", 16)
    del saved["data_background"], saved["data_grid"]
    (recipe_dir / "recipe.json").write_text(json.dumps(saved))
    assert run_cli("recipe", "shapes", "--out", recipe_dir, "--smoke") == 2
    assert "data_background" in capsys.readouterr().err
    saved.update(data_background="plain", data_grid=16)
    (recipe_dir / "recipe.json").write_text(json.dumps(saved))
    # The same for the caption order: a folder without the key was written with "given" captions.
    assert saved.pop("data_caption_order") == "given"
    (recipe_dir / "recipe.json").write_text(json.dumps(saved))
    assert run_cli("recipe", "shapes", "--out", recipe_dir, "--smoke") == 0
    # A folder without snap_background never snapped its shards: the plain command (which now snaps
    # the plain background) refuses it; --no-snap-background continues it as it was.
    assert saved.pop("snap_background") is None
    (recipe_dir / "recipe.json").write_text(json.dumps(saved))
    assert run_cli("recipe", "shapes", "--out", recipe_dir, "--smoke") == 2
    assert "snap_background" in capsys.readouterr().err
    assert run_cli("recipe", "shapes", "--out", recipe_dir, "--smoke", "--no-snap-background") == 0
    saved["snap_background"] = None
    (recipe_dir / "recipe.json").write_text(json.dumps(saved))

    # Other settings on the same folder are refused, with exit code 2.
    assert run_cli("recipe", "shapes", "--out", recipe_dir, "--smoke", "--seed", "5") == 2


def test_train_grpo_cli_with_the_judge_reward_and_evaluation(recipe_dir, tmp_path):
    out = tmp_path / "grpo"
    code = run_cli("train", "grpo", "--init-from", recipe_dir / "sft" / "bundle", "--out", out, "--steps", "1",
                   "--group-size", "2", "--prompts-per-step", "2", "--eval-every", "1", "--eval-num-prompts", "3",
                   "--device", "cpu", "--beta", "0", "--lr", "4e-5", "--warmup-steps", "4")
    assert code == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    (train,) = [r for r in records if r["kind"] == "train"]
    assert train["lr"] == pytest.approx(1e-5)  # the lr step 1 ran at: a quarter of 4e-5 in a 4-step warm-up
    start, ev = [r for r in records if r["kind"] == "eval"]  # before GRPO, then after step 1
    assert (start["step"], ev["step"]) == (0, 1)
    assert 0.0 <= train["reward_mean"] <= 1.0 and train["kl"] == 0.0
    assert ev["images"] == 3 and 0.0 <= ev["judge_score"] <= 1.0
    assert (out / "bundle" / "simplear.json").is_file()
    assert run_cli("train", "grpo", "--init-from", tmp_path / "missing", "--out", tmp_path / "x") == 2


def test_geneval_table_means_over_tags_and_splits_held_out_pairs():
    from simplear.train.suite_eval import geneval_table, is_heldout, spread

    records = [{"tag": "colors", "correct": True, "score": 1.0}, {"tag": "colors", "correct": False, "score": 0.5},
               {"tag": "counting", "correct": True, "score": 1.0}]
    table = geneval_table(records)
    assert table["tags"] == {"colors": 0.5, "counting": 1.0}
    assert table["overall"] == 0.75  # mean over tags, not over images (2/3)
    assert table["partial"] == 2.5 / 3 and table["images"] == 3
    pairs = {("blue", "star")}
    assert is_heldout({"include": [{"class": "star", "color": "blue", "count": 1}]}, pairs)
    assert not is_heldout({"include": [{"class": "star", "color": "red", "count": 1}]}, pairs)
    assert is_heldout({"heldout": True, "include": []}, set())
    assert spread(list(range(10)), 3) == [0, 3, 6] and spread([1, 2], 0) == [1, 2]


def test_stage_table_cuts_figures_down_never_up():
    from simplear.train.recipe import stage_table

    ev = {"overall": 0.37399, "tags": {"colors": 0.5799}, "images": 4, "heldout": {"overall": 0.0999},
          "seen": {"overall": 0.38}}
    rows, markdown = stage_table({"grpo": {"eval": ev, "seconds": 799.9}})
    assert rows[0]["overall"] == 0.37399
    line = markdown.splitlines()[-1]
    assert line.startswith("| grpo | 0.373 |") and "| 0.579 |" in line and "| 0.099 |" in line
    assert line.endswith("| 4 | 799 |")  # 799.9 s is not 800


def test_ship_bundle_copies_the_final_bundle_and_card_and_enforces_the_size_limit(recipe_dir, tmp_path):
    from simplear.bundle import load_bundle
    from simplear.train.model_card import ship_bundle, write_model_card

    if not (recipe_dir / "stages" / "grpo.json").is_file():  # run alone (-k): the fixture stops after SFT
        assert run_cli("recipe", "shapes", "--out", recipe_dir, "--smoke") == 0
    write_model_card(recipe_dir, "simplear recipe shapes --smoke")
    assets, docs = tmp_path / "assets" / "default", tmp_path / "docs"
    with pytest.raises(ValueError, match="over the"):
        ship_bundle(recipe_dir, assets, docs, max_bytes=1000)
    assert not assets.exists()  # nothing half-copied
    info = ship_bundle(recipe_dir, assets, docs)
    assert info["bytes"] > 1000 and (assets / "README.md").is_file()
    card = (docs / "default-model.md").read_text()
    assert "](images/default-model/samples-stages.png)" in card
    assert (docs / "images" / "default-model" / "samples-stages.png").is_file()
    bundle = load_bundle(assets, device="cpu")  # the shipped copy loads on its own
    assert bundle.config.image_size == 64

    # Shipping the same weights again keeps the shipped bytes, even when they are spelled otherwise
    # (safetensors may order its header differently), so git history gets no second copy.
    from safetensors.torch import load_file, save_file

    from simplear.train.model_card import same_safetensors

    shipped, made = assets / "model.safetensors", recipe_dir / "grpo" / "bundle" / "model.safetensors"
    data = shipped.read_bytes()
    n = int.from_bytes(data[:8], "little")
    text = json.dumps(json.loads(data[8:8 + n]), indent=1).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header with spaces to 8 bytes
    shipped.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
    respelled = shipped.read_bytes()
    assert respelled != made.read_bytes() and same_safetensors(shipped, made)
    ship_bundle(recipe_dir, assets, docs)
    assert shipped.read_bytes() == respelled  # same weights: the old bytes stay
    save_file({k: v + 1 for k, v in load_file(shipped).items()}, shipped, metadata={"format": "pt"})
    assert not same_safetensors(shipped, made)
    ship_bundle(recipe_dir, assets, docs)
    assert shipped.read_bytes() == made.read_bytes()  # other weights: the run's file is shipped


def test_stage_step_flags_reach_the_saved_recipe(tmp_path, capsys):
    out = tmp_path / "steps"
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data", "--pretrain-steps", "2",
                   "--sft-steps", "5", "--grpo-steps", "3") == 0
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["pretrain_overrides"][-1] == "max_steps=2" and saved["sft_overrides"][-1] == "max_steps=5"
    assert saved["grpo_overrides"]["steps"] == 3
    assert "--sft-steps 5" in (out / "MODEL_CARD.md").read_text()  # the card quotes the real command
    capsys.readouterr()
    # Another step count on the same folder is another recipe; a count below 1 is refused.
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data", "--pretrain-steps", "2",
                   "--sft-steps", "6", "--grpo-steps", "3") == 2
    assert "sft_overrides" in capsys.readouterr().err
    assert run_cli("recipe", "shapes", "--out", tmp_path / "zero", "--smoke", "--sft-steps", "0") == 2
    assert "--sft-steps must be >= 1" in capsys.readouterr().err


def test_image_count_flags_reach_the_saved_recipe_and_the_data(tmp_path, capsys):
    out = tmp_path / "counts"
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data", "--pretrain-images", "5",
                   "--sft-images", "7") == 0
    saved = json.loads((out / "recipe.json").read_text())
    assert (saved["pretrain_images"], saved["sft_images"]) == (5, 7)
    for split, count in (("low", 5), ("high", 7)):
        assert len((out / "data" / split / "captions.jsonl").read_text().splitlines()) == count
    assert "--pretrain-images 5 --sft-images 7" in (out / "MODEL_CARD.md").read_text()
    capsys.readouterr()
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data", "--pretrain-images", "5",
                   "--sft-images", "8") == 2  # another recipe on the same folder
    assert "sft_images" in capsys.readouterr().err
    assert run_cli("recipe", "shapes", "--out", tmp_path / "zero", "--smoke", "--sft-images", "0") == 2
    assert "sft_images must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "zero").exists()


def test_sft_tag_weights_reach_only_the_sft_scenes(tmp_path, capsys):
    out = tmp_path / "mix"
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data", "--sft-images", "40",
                   "--sft-tag-weights", "single_object=0,colors=0,counting=0,two_object=0,color_attr=0") == 0
    mix = json.loads((out / "recipe.json").read_text())["sft_tag_weights"]
    assert mix == {"single_object": 0, "two_object": 0, "counting": 0, "colors": 0, "position": 100, "color_attr": 0}
    tags = {json.loads(line)["metadata"]["tag"] for line in (out / "data" / "high" / "captions.jsonl").read_text().splitlines()}
    assert tags == {"position"}  # the only tag left with a weight
    for split in ("low", "high-val"):  # every other set keeps GenEval's mix
        tags = {json.loads(line)["metadata"]["tag"] for line in (out / "data" / split / "captions.jsonl").read_text().splitlines()}
        assert len(tags) > 1, split
    card = (out / "MODEL_CARD.md").read_text()
    assert "--sft-tag-weights single_object=0,two_object=0,counting=0,colors=0,position=100,color_attr=0" in card
    assert "SFT scenes' tag mix (weights;" in card and "position 100, color_attr 0." in card
    capsys.readouterr()
    for text, message in (("position=-1", "WEIGHT >= 0"), ("position=nan", "WEIGHT >= 0"), ("shapes=3", "TAG one of"), ("position", "TAG=WEIGHT"),
                          ("single_object=0,two_object=0,counting=0,colors=0,position=0,color_attr=0", "not all be 0")):
        with pytest.raises(SystemExit) as exc:
            run_cli("recipe", "shapes", "--out", tmp_path / "bad", "--smoke", "--sft-tag-weights", text)
        assert exc.value.code == 2 and message in capsys.readouterr().err, text
    assert not (tmp_path / "bad").exists()


def test_tokenizer_set_reaches_the_tokenizer_stage_and_bad_items_fail_at_once(tmp_path, capsys):
    out = tmp_path / "tok"
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "tokenizer",
                   "--tokenizer-set", "precision=bf16", "--tokenizer-set", "steps=3",
                   "--tokenizer-set", "norm=pixel") == 0
    overrides = json.loads((out / "recipe.json").read_text())["tokenizer_overrides"]
    assert (overrides["precision"], overrides["steps"], overrides["norm"]) == ("bf16", 3, "pixel")
    assert json.loads((out / "tokenizer" / "config.json").read_text())["norm"] == "pixel"
    assert overrides["channels"] == [8, 16, 16, 16]  # the smoke configuration's own overrides stay
    trained = json.loads((out / "tokenizer" / "train_config.json").read_text())
    assert (trained["precision"], trained["steps"], trained["resolutions"]) == ("bf16", 3, [32, 64])
    assert "--tokenizer-set precision=bf16 --tokenizer-set steps=3" in (out / "MODEL_CARD.md").read_text()
    capsys.readouterr()
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "tokenizer") == 2  # another recipe
    assert "tokenizer_overrides" in capsys.readouterr().err
    bad = tmp_path / "bad"
    for items, message in ((["seed=3"], "the recipe sets out, resolutions, seed, device itself"),
                           (["precision=fp64"], "precision must be one of"),
                           (["norm=batch"], "norm must be one of group, pixel"),
                           (["colour=red"], "unknown config key 'colour'"),
                           (["downsample=64"], "resolution 32 is not divisible by downsample 64"),
                           (["steps"], "must look like key=value")):
        args = [a for item in items for a in ("--tokenizer-set", item)]
        assert run_cli("recipe", "shapes", "--out", bad, "--smoke", *args) == 2, items
        assert message in capsys.readouterr().err, items
        assert not bad.exists()
    assert run_cli("recipe", "shapes", "--out", bad, "--smoke", "--tokenizer", out / "tokenizer",
                   "--tokenizer-set", "steps=3") == 2
    assert "with --tokenizer it trains none" in capsys.readouterr().err
    assert not bad.exists()


def test_caption_order_reaches_the_saved_recipe_and_the_data(tmp_path, capsys):
    out = tmp_path / "order"
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data", "--data-caption-order", "raster") == 0
    assert json.loads((out / "recipe.json").read_text())["data_caption_order"] == "raster"
    for split in ("low", "high"):
        assert json.loads((out / "data" / split / "config.json").read_text())["shapes"]["caption_order"] == "raster"
    rows = [json.loads(line) for line in (out / "data" / "high" / "captions.jsonl").read_text().splitlines()]
    for row in rows:
        include = row["metadata"]["include"]
        if len(include) == 2 and not any("position" in c for c in include):
            top = min(row["objects"], key=lambda o: (o["box"][1], o["box"][0] + o["box"][2]))
            assert include[0]["class"] == top["class"]
    assert "--data-caption-order raster" in (out / "MODEL_CARD.md").read_text()
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data") == 2  # another recipe
    assert "data_caption_order" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse's own refusal of a value not in the choices
        run_cli("recipe", "shapes", "--out", tmp_path / "bad", "--smoke", "--data-caption-order", "sideways")
    assert exc.value.code == 2 and "invalid choice: 'sideways'" in capsys.readouterr().err


def test_stage_config_overrides_reach_the_saved_recipe_and_bad_ones_fail_at_once(tmp_path, capsys):
    out = tmp_path / "sets"
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data", "--sft-steps", "5",
                   "--sft-set", "batch_size=4", "--sft-set", "micro_batch_size=4",
                   "--pretrain-set", "optim.lr=2e-3") == 0
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["sft_overrides"][-3:] == ["max_steps=5", "batch_size=4", "micro_batch_size=4"]
    assert saved["pretrain_overrides"][-1] == "optim.lr=2e-3"
    assert "--sft-set batch_size=4 --sft-set micro_batch_size=4" in (out / "MODEL_CARD.md").read_text()
    capsys.readouterr()
    # An unknown field or a value of the wrong type is refused before any stage runs.
    assert run_cli("recipe", "shapes", "--out", tmp_path / "bad", "--smoke", "--sft-set", "optim.lrr=1") == 2
    assert "lrr" in capsys.readouterr().err
    assert run_cli("recipe", "shapes", "--out", tmp_path / "bad", "--smoke", "--pretrain-set", "batch_size=x") == 2
    assert "batch_size" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_grpo_overrides_reach_the_saved_recipe_and_bad_ones_fail_at_once(tmp_path, capsys):
    out = tmp_path / "grpo-sets"
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data", "--grpo-steps", "50",
                   "--grpo-set", "passes=3", "--grpo-set", "beta=0",
                   "--grpo-set", "tag_weights=single_object=0.1,colors=0.4") == 0
    saved = json.loads((out / "recipe.json").read_text())["grpo_overrides"]
    assert (saved["steps"], saved["passes"], saved["beta"]) == (50, 3, 0.0)
    assert saved["tag_weights"] == "single_object=0.1,colors=0.4"
    assert saved["group_size"] == 2 and saved["progress"] is False  # the smoke recipe's other settings stay
    assert "--grpo-set passes=3 --grpo-set beta=0" in (out / "MODEL_CARD.md").read_text()
    capsys.readouterr()
    for item, words in (("passes=x", "passes"), ("group_size=1", "group_size must be >= 2"),
                        ("out=elsewhere", "the recipe sets"), ("lrr=1", "lrr"),
                        ("tag_weights=cats=1", "TAG one of")):
        assert run_cli("recipe", "shapes", "--out", tmp_path / "bad", "--smoke", "--grpo-set", item) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_recipe_can_start_from_a_trained_tokenizer(recipe_dir, tmp_path, capsys):
    from simplear.train.recipe import _copy_tokenizer, smoke_config
    from simplear.visual_tokenizers import load_visual_tokenizer

    trained = recipe_dir / "tokenizer"
    out = tmp_path / "given"
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "tokens", "--tokenizer", trained) == 0
    marker = json.loads((out / "stages" / "tokenizer.json").read_text())
    sha = load_visual_tokenizer(trained).fingerprint()
    assert marker["copied_from"] == str(trained) and marker["sha256"] == sha
    assert 0.0 <= marker["eval"]["overall"] <= 1.0  # judged like a trained one
    # The training run's folder (train/checkpoint.pt, log) stays behind; weights and config come along.
    assert (trained / "train").is_dir() and not (out / "tokenizer" / "train").exists()
    assert (out / "tokenizer" / "model.safetensors").read_bytes() == (trained / "model.safetensors").read_bytes()
    manifest = json.loads((out / "tokens" / "high" / "manifest.json").read_text())
    assert manifest["visual_tokenizer"]["sha256"] == sha  # the shards are the given tokenizer's codes
    card = (out / "MODEL_CARD.md").read_text()
    assert "--tokenizer" in card and f"a copy of `{trained}`" in card
    capsys.readouterr()
    # A folder that is no tokenizer, or one whose downsampling does not divide the resolutions.
    assert run_cli("recipe", "shapes", "--out", tmp_path / "none", "--smoke", "--tokenizer", tmp_path / "nope") == 2
    assert "does not exist" in capsys.readouterr().err
    odd = dataclasses.replace(smoke_config(str(tmp_path / "odd")), low_resolution=36, tokenizer_from=str(trained))
    with pytest.raises(ValueError, match="does not divide the recipe resolution 36"):
        _copy_tokenizer(odd, tmp_path / "odd" / "tokenizer")
    assert not (tmp_path / "odd" / "tokenizer").exists()


def test_snap_background_reaches_every_token_folder(recipe_dir, tmp_path, capsys):
    # On by default for the plain background (the smoke recipe's, as the real one's).
    assert json.loads((recipe_dir / "tokens" / "high" / "manifest.json").read_text())["snap"]["snapped"] > 0
    out = tmp_path / "snap"
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "tokens", "--snap-background",
                   "--tokenizer", recipe_dir / "tokenizer") == 0
    assert json.loads((out / "recipe.json").read_text())["snap_background"] is True
    for split in ("low", "low-val", "high", "high-val"):
        snap = json.loads((out / "tokens" / split / "manifest.json").read_text())["snap"]
        assert snap["color"] == [128, 128, 128] and snap["radius"] == 1 and snap["snapped"] > 0
    card = (out / "MODEL_CARD.md").read_text()
    assert "--snap-background" in card and "holds the one code a uniform grey image encodes to" in card
    assert "of the 32-px code positions and" in card and "of the 64-px code positions)" in card
    capsys.readouterr()
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "tokens", "--no-snap-background",
                   "--tokenizer", recipe_dir / "tokenizer") == 2  # another recipe: shards differ
    assert "snap_background" in capsys.readouterr().err
    # Other backgrounds have no one colour: no snapping unless asked for, and asking is refused.
    textured = tmp_path / "textured"
    assert run_cli("recipe", "shapes", "--out", textured, "--smoke", "--until", "tokens", "--data-background",
                   "textured", "--tokenizer", recipe_dir / "tokenizer") == 0
    assert "snap" not in json.loads((textured / "tokens" / "high" / "manifest.json").read_text())
    assert "holds the one code" not in (textured / "MODEL_CARD.md").read_text()
    assert run_cli("recipe", "shapes", "--out", tmp_path / "tex", "--smoke", "--snap-background",
                   "--data-background", "textured") == 2
    assert "snap_background needs data_background 'plain'" in capsys.readouterr().err
    assert not (tmp_path / "tex").exists()


def test_a_continued_run_keeps_its_own_evaluation_settings(tmp_path, capsys):
    out = tmp_path / "evalset"
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data", "--eval-batch-size", "3") == 0
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["eval_batch_size"] == 3
    # A run started before a default changed (here: older evaluation settings in its recipe.json)
    # continues with the settings it started with instead of being refused.
    saved["tune_sampling"] = [[4.0, 1.0]]
    (out / "recipe.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data") == 0
    assert "continuing with this run's own eval_batch_size, tune_sampling" in capsys.readouterr().out
    kept = json.loads((out / "recipe.json").read_text())
    assert kept["eval_batch_size"] == 3 and kept["tune_sampling"] == [[4.0, 1.0]]
    # Settings that change what is trained are still refused.
    assert run_cli("recipe", "shapes", "--out", out, "--smoke", "--until", "data", "--seed", "5") == 2
    assert "seed" in capsys.readouterr().err


def test_an_interrupted_grpo_stage_keeps_the_settings_it_started_with(tmp_path):
    from simplear.train.recipe import RecipeConfig, grpo_defaults, grpo_fields

    cfg = RecipeConfig(out=str(tmp_path))
    assert grpo_fields(cfg, tmp_path) == grpo_defaults()
    (tmp_path / "grpo").mkdir()
    started = {**grpo_defaults(), "reward": "0.5*shapes:strict+0.5*shapes:partial", "steps": 40}
    (tmp_path / "grpo" / "config.json").write_text(json.dumps(started))
    assert grpo_fields(cfg, tmp_path) == grpo_defaults()  # no checkpoint yet: a fresh start
    (tmp_path / "grpo" / "checkpoints" / "step-000005").mkdir(parents=True)
    fields = grpo_fields(cfg, tmp_path)
    assert (fields["reward"], fields["steps"]) == ("0.5*shapes:strict+0.5*shapes:partial", 40)
    overridden = grpo_fields(dataclasses.replace(cfg, grpo_overrides={"steps": 60}), tmp_path)
    assert overridden["steps"] == 60  # what the user sets on the command line still wins
