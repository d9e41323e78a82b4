"""Tokenizer training: it learns, logs, checkpoints atomically, resumes exactly, and the CLI works."""

import json

import pytest
import torch
from conftest import run_cli
from PIL import Image

from simplear.train.tokenizer import RECIPES, TokenizerTrainConfig, recipe_config, step_plan, train_tokenizer
from simplear.visual_tokenizers import FSQAutoencoderConfig, load_visual_tokenizer

TINY = dict(
    levels=(5, 4, 3),
    downsample=8,
    channels=(8, 8, 8, 8),
    res_blocks=(0, 0, 0, 1),
    resolutions=(32, 64),
    crop=32,
    batch_size=8,
    lr=3e-3,
    warmup=5,
    eval_images=16,
    log_every=5,
    checkpoint_every=10,
    device="cpu",
)


def test_training_improves_logs_and_saves(tmp_path):
    cfg = TokenizerTrainConfig(out=str(tmp_path / "tok"), steps=30, **TINY)
    report = train_tokenizer(cfg, log=lambda *_: None)
    records = [json.loads(line) for line in (tmp_path / "tok/train/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(5, 31, 5))
    assert records[-1]["loss"] < 0.75 * records[0]["loss"]
    assert {"psnr", "codebook_usage", "lr"} <= set(records[0])
    assert set(report["heldout"]) == {"32", "64"}
    assert report["heldout"]["64"]["psnr"] > 12
    tok = load_visual_tokenizer(tmp_path / "tok")
    assert tok.encode(torch.zeros(1, 3, 64, 64)).shape == (1, 8, 8)
    assert json.loads((tmp_path / "tok/train_config.json").read_text())["steps"] == 30


def test_bf16_autocast_trains_too_and_saves_float32_weights(tmp_path):
    small = {**TINY, "resolutions": (32,), "eval_images": 4, "log_every": 10}
    weights = {}
    for precision in ("fp32", "bf16"):
        cfg = TokenizerTrainConfig(out=str(tmp_path / precision), steps=20, precision=precision, **small)
        train_tokenizer(cfg, log=lambda *_: None)
        records = [json.loads(line) for line in (tmp_path / precision / "train/log.jsonl").read_text().splitlines()]
        assert records[-1]["loss"] < 0.8 * records[0]["loss"], (precision, records)
        tok = load_visual_tokenizer(tmp_path / precision)
        weights[precision] = torch.cat([p.detach().flatten() for p in tok.parameters()])
        assert all(p.dtype == torch.float32 for p in tok.parameters())
    assert not torch.equal(weights["fp32"], weights["bf16"])  # the forward really ran under autocast
    with pytest.raises(ValueError, match="precision"):
        TokenizerTrainConfig(precision="half")


def test_resume_matches_uninterrupted_run(tmp_path):
    # 6 crop steps, then 4 finishing steps on whole 64-px images: the resumed run crosses the phases.
    small = {**TINY, "log_every": 2, "checkpoint_every": 4, "eval_images": 4, "resolutions": (32,),
             "finish_steps": 4, "finish_resolutions": (64,), "finish_warmup": 1}
    train_tokenizer(TokenizerTrainConfig(out=str(tmp_path / "a"), steps=6, **small), log=lambda *_: None)

    def killed_at_step_6(message):  # the checkpoint of step 4 exists, steps 5-6 are lost
        if message.startswith("step 6/"):
            raise KeyboardInterrupt

    cfg = TokenizerTrainConfig(out=str(tmp_path / "b"), steps=6, **small)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(cfg, log=killed_at_step_6)
    assert not (tmp_path / "b/model.safetensors").exists()
    messages = []
    train_tokenizer(cfg, log=messages.append)
    assert any("resumed" in m and "step 4" in m for m in messages)
    a = load_visual_tokenizer(tmp_path / "a")
    b = load_visual_tokenizer(tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(pa, pb, atol=1e-5), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "b/train/log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10]
    # A changed config must not silently continue another run's checkpoint.
    with pytest.raises(ValueError, match="different config"):
        train_tokenizer(TokenizerTrainConfig(out=str(tmp_path / "b"), steps=30, **{**small, "lr": 1e-3}))


def test_trains_from_an_image_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (80, 64), (20 * i, 255 - 20 * i, 100)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    cfg = TokenizerTrainConfig(out=str(tmp_path / "tok"), data=str(folder), steps=4, **TINY)
    report = train_tokenizer(cfg, log=lambda *_: None)
    assert report["heldout"]["64"]["images"] == 16


def test_recipes_and_config_validation():
    assert set(RECIPES) >= {"shapes", "shapes-d16"}
    cfg = recipe_config("shapes", steps=7, out="x", levels=None)
    assert cfg.steps == 7 and cfg.levels == (8, 8, 8, 5) and cfg.downsample == 8 and cfg.batch_size == 8
    assert recipe_config("shapes-d16").downsample == 16
    finish = recipe_config("shapes-finish")  # `shapes` + 400 whole-image steps at 64 px, then 400 at 96 px
    assert (finish.steps, finish.finish_steps, finish.finish_resolutions) == (4000, 800, (64, 96))
    assert recipe_config("shapes").finish_steps == 0  # the ShapesWorld recipe's tokenizer has no finish
    with pytest.raises(ValueError, match="unknown tokenizer recipe"):
        recipe_config("nope")
    with pytest.raises(ValueError, match="divisible"):
        TokenizerTrainConfig(resolutions=(60,))
    with pytest.raises(ValueError, match="divisible"):
        TokenizerTrainConfig(finish_steps=4, finish_resolutions=(64, 100))
    with pytest.raises(ValueError, match="needs finish_resolutions"):
        TokenizerTrainConfig(finish_steps=4)
    with pytest.raises(ValueError, match="at least one step"):
        TokenizerTrainConfig(finish_steps=1, finish_resolutions=(64, 96))
    with pytest.raises(ValueError, match="finish_steps must be >= 0"):
        TokenizerTrainConfig(finish_steps=-1, finish_resolutions=(64,))
    # A config saved before the finishing fields existed reads back with them off.
    old = {k: v for k, v in TokenizerTrainConfig().to_dict().items() if not k.startswith("finish")}
    assert TokenizerTrainConfig.from_dict({**old, "unknown_later_field": 1}).finish_steps == 0


def test_step_plan_crops_then_finishes_on_whole_images_block_by_block():
    cfg = TokenizerTrainConfig(resolutions=(64, 128), crop=64, steps=10, lr=1e-3, warmup=2, edge_weight=4.0,
                               finish_steps=7, finish_resolutions=(64, 96), finish_lr=2e-4, finish_warmup=2,
                               finish_edge_weight=8.0)
    assert cfg.total_steps == 17
    plans = [step_plan(s, cfg) for s in range(cfg.total_steps)]
    assert [p.resolution for p in plans[:4]] == [64, 128, 64, 128] and {p.crop for p in plans[:10]} == {64}
    assert {p.edge_weight for p in plans[:10]} == {4.0} and {p.edge_weight for p in plans[10:]} == {8.0}
    assert plans[0].lr == pytest.approx(5e-4) and plans[1].lr == pytest.approx(1e-3)
    assert plans[9].lr < plans[2].lr  # cosine decay over the crop phase
    # Finishing: 7 steps over two sizes -> blocks of 3 (64 px) and 4 (96 px), whole images,
    # each block warming up again from its own start.
    assert [p.resolution for p in plans[10:]] == [64, 64, 64, 96, 96, 96, 96]
    assert {p.crop for p in plans[10:]} == {0}
    assert [plans[i].lr for i in (10, 11, 13, 14)] == pytest.approx([1e-4, 2e-4, 1e-4, 2e-4])
    assert plans[16].lr < plans[14].lr
    no_override = TokenizerTrainConfig(edge_weight=4.0, finish_steps=2, finish_resolutions=(64,))
    assert step_plan(no_override.steps, no_override).edge_weight == 4.0


def test_cli_train_tokenizer(tmp_path):
    code = run_cli(
        "train", "tokenizer", "--recipe", "shapes", "--out", tmp_path / "tok", "--steps", "2",
        "--levels", "5,4,3", "--channels", "8,8,8,8", "--res-blocks", "0,0,0,1", "--resolutions", "32",
        "--crop", "32", "--batch-size", "4", "--eval-images", "4", "--device", "cpu",
        "--finish-steps", "2", "--finish-resolutions", "64", "--finish-lr", "1e-4", "--finish-edge-weight", "8",
    )
    assert code == 0
    saved = json.loads((tmp_path / "tok/train_config.json").read_text())
    assert (saved["finish_steps"], saved["finish_resolutions"], saved["finish_edge_weight"]) == (2, [64], 8.0)
    assert [json.loads(x)["step"] for x in (tmp_path / "tok/train/log.jsonl").read_text().splitlines()][-1] == 4
    assert load_visual_tokenizer(tmp_path / "tok").codebook_size == 60
    assert load_visual_tokenizer(tmp_path / "tok").config.norm == "pixel"  # the `shapes` recipe's
    code = run_cli("train", "tokenizer", "--out", tmp_path / "grp", "--steps", "1", "--norm", "group",
                   "--levels", "5,4,3", "--channels", "8,8,8,8", "--res-blocks", "0,0,0,1", "--resolutions", "32",
                   "--crop", "32", "--batch-size", "2", "--eval-images", "2", "--device", "cpu")
    assert code == 0 and load_visual_tokenizer(tmp_path / "grp").config.norm == "group"
    code = run_cli("train", "tokenizer", "--out", tmp_path / "pix", "--steps", "1", "--norm", "pixel",
                   "--levels", "5,4,3", "--channels", "8,8,8,8", "--res-blocks", "0,0,0,1", "--resolutions", "32",
                   "--crop", "32", "--batch-size", "2", "--eval-images", "2", "--device", "cpu")
    assert code == 0 and load_visual_tokenizer(tmp_path / "pix").config.norm == "pixel"
    assert json.loads((tmp_path / "pix/train_config.json").read_text())["norm"] == "pixel"
    with pytest.raises(SystemExit) as exc:  # argparse's own refusal of a value not in the choices
        run_cli("train", "tokenizer", "--out", tmp_path / "t3", "--norm", "batch")
    assert exc.value.code == 2
    assert run_cli("train", "tokenizer", "--out", tmp_path / "t2", "--data", tmp_path / "missing.jsonl") == 2


def test_edge_weights_mark_colour_edges_not_noise():
    from simplear.train.tokenizer import edge_weights

    x = torch.full((1, 3, 16, 16), -0.2)
    x += 0.06 * torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) - 0.03  # background noise
    x[..., 4:10, 4:10] = 0.9  # a shape
    w = edge_weights(x, 4.0)[0, 0]
    assert w.shape == (16, 16) and w.min() == 1.0
    assert w[4, 6] == 5.0 and w[9, 6] == 5.0  # on the boundary: full weight
    assert w[13, 13] == 1.0 and w[0, 0] == 1.0  # noise far from the shape: no extra weight


def test_init_from_starts_from_saved_weights(tmp_path):
    from simplear.visual_tokenizers import FSQAutoencoder

    arch = {k: TINY[k] for k in ("levels", "downsample", "channels", "res_blocks")}
    torch.manual_seed(5)
    start = FSQAutoencoder(FSQAutoencoderConfig(**arch))
    start.save_pretrained(tmp_path / "start")
    small = {**TINY, "resolutions": (32,), "eval_images": 2, "lr": 1e-12}
    cfg = TokenizerTrainConfig(out=str(tmp_path / "ft"), steps=1, init_from=str(tmp_path / "start"), **small)
    train_tokenizer(cfg, log=lambda *_: None)
    tuned = load_visual_tokenizer(tmp_path / "ft")
    for (name, a), b in zip(start.state_dict().items(), tuned.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    with pytest.raises(ValueError, match="another architecture"):
        train_tokenizer(TokenizerTrainConfig(out=str(tmp_path / "x"), steps=1, init_from=str(tmp_path / "start"),
                                             **{**small, "levels": (5, 5)}))


def test_freeze_encoder_trains_the_decoder_and_keeps_every_code(tmp_path):
    from simplear.visual_tokenizers import FSQAutoencoder

    arch = {k: TINY[k] for k in ("levels", "downsample", "channels", "res_blocks")}
    torch.manual_seed(6)
    FSQAutoencoder(FSQAutoencoderConfig(**arch)).save_pretrained(tmp_path / "start")
    small = {**TINY, "resolutions": (32,), "eval_images": 2}
    cfg = TokenizerTrainConfig(out=str(tmp_path / "ft"), steps=3, init_from=str(tmp_path / "start"),
                               freeze_encoder=True, **small)
    train_tokenizer(cfg, log=lambda *_: None)
    start, tuned = load_visual_tokenizer(tmp_path / "start"), load_visual_tokenizer(tmp_path / "ft")
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(start.encode(images), tuned.encode(images))  # same codes: old shards stay valid
    assert all(torch.equal(a, b) for a, b in zip(start.encoder.state_dict().values(),
                                                 tuned.encoder.state_dict().values()))
    assert any(not torch.equal(a, b) for a, b in zip(start.decoder.state_dict().values(),
                                                     tuned.decoder.state_dict().values()))
    with pytest.raises(ValueError, match="needs init_from"):
        TokenizerTrainConfig(freeze_encoder=True)


def test_a_frozen_encoder_gives_the_decoder_its_inference_codes_under_bf16_autocast():
    """Decoder-only training in bf16 must still see exactly the float32 codes `encode` gives."""
    from simplear.visual_tokenizers import FSQAutoencoder

    torch.manual_seed(8)
    model = FSQAutoencoder(FSQAutoencoderConfig(**{k: TINY[k] for k in ("levels", "downsample", "channels",
                                                                         "res_blocks")}))
    model.encoder.requires_grad_(False)
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    expected = model.encode(images)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        recon, codes = model(images, frozen_encoder=True)
        _, bf16_codes = model(images)
    assert torch.equal(codes, expected)
    assert recon.dtype == torch.bfloat16  # the decoder itself did run under autocast
    recon.float().square().mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    # What the flag guards against: the bf16 encoder moves codes (a sanity check of this test's premise).
    assert not torch.equal(bf16_codes, expected)


def test_a_new_larger_decoder_for_an_existing_encoder_keeps_every_code(tmp_path):
    """--decoder-channels with --freeze-encoder: init_from's encoder, a fresh decoder of another width."""
    from simplear.visual_tokenizers import FSQAutoencoder

    arch = {k: TINY[k] for k in ("levels", "downsample", "channels", "res_blocks")}
    torch.manual_seed(7)
    FSQAutoencoder(FSQAutoencoderConfig(**arch)).save_pretrained(tmp_path / "start")
    small = {**TINY, "resolutions": (32,), "eval_images": 2}
    wide = dict(decoder_channels=(16, 16, 16, 16), decoder_res_blocks=(0, 0, 1, 1))
    cfg = TokenizerTrainConfig(out=str(tmp_path / "wide"), steps=2, init_from=str(tmp_path / "start"),
                               freeze_encoder=True, **small, **wide)
    train_tokenizer(cfg, log=lambda *_: None)
    start, tuned = load_visual_tokenizer(tmp_path / "start"), load_visual_tokenizer(tmp_path / "wide")
    assert tuned.config.dec_channels == (16, 16, 16, 16) and tuned.config.channels == TINY["channels"]
    assert tuned.decoder.conv_in.out_channels == 16 and tuned.encoder.conv_in.out_channels == 8
    assert json.loads((tmp_path / "wide" / "config.json").read_text())["decoder_res_blocks"] == [0, 0, 1, 1]
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(start.encode(images), tuned.encode(images))
        assert tuned.decode(tuned.encode(images)).shape == images.shape
    # Without --freeze-encoder the encoder would move, so another decoder shape is refused.
    with pytest.raises(ValueError, match="only the decoder may differ"):
        train_tokenizer(TokenizerTrainConfig(out=str(tmp_path / "x"), steps=1, init_from=str(tmp_path / "start"),
                                             **small, **wide))
    # A tokenizer without its own decoder shape writes no decoder keys: old identities stay the same.
    assert "decoder_channels" not in FSQAutoencoderConfig(**arch).to_dict()
    with pytest.raises(ValueError, match="decoder_channels"):
        FSQAutoencoderConfig(**arch, decoder_channels=(16, 16, 16))


def test_gradient_difference_punishes_a_blunted_tip_more_than_a_flat_shift():
    from simplear.train.tokenizer import gradient_difference

    target = torch.full((1, 3, 16, 16), -0.5)
    target[..., 7:9, 2:14] = 0.8  # a thin two-pixel bar, like a star's tip
    blunted = target.clone()
    blunted[..., 7:9, 11:14] = -0.5  # the tip is cut off
    shifted = target + 0.05  # everything a little brighter: no edge changes
    assert gradient_difference(target, target) == 0.0
    assert gradient_difference(shifted, target) < 1e-6
    assert gradient_difference(blunted, target) > 0.01
