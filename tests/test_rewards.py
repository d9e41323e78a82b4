"""Rewards: the judge-based reward, a tiny random CLIP built here, weighted sums and spec strings."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from simplear.rewards import (
    ClipPreprocess,
    ClipReward,
    ShapesReward,
    WeightedReward,
    build_reward,
    to_pil_list,
)


def _fake_judge(image, metadata):
    # Stand-in judge: "correct" when the image's mean red channel exceeds the spec's threshold.
    red = np.asarray(image)[..., 0].mean() / 255
    return SimpleNamespace(correct=red > metadata["threshold"], score=round(red, 3))


def _solid(rgb, size=(16, 12)):
    return Image.new("RGB", size, rgb)


def test_shapes_reward_partial_and_strict_with_stand_in_judge():
    images = [_solid((255, 0, 0)), _solid((51, 0, 0))]
    meta = [{"threshold": 0.5}, {"threshold": 0.5}]
    partial = ShapesReward("partial", judge=_fake_judge)(images, ["a", "b"], meta)
    strict = ShapesReward("strict", judge=_fake_judge)(images, ["a", "b"], meta)
    assert partial.dtype == torch.float32 and torch.allclose(partial, torch.tensor([1.0, 0.2]))
    assert torch.equal(strict, torch.tensor([1.0, 0.0]))


def test_shapes_reward_bad_input():
    with pytest.raises(ValueError, match="mode"):
        ShapesReward("lenient")
    reward = ShapesReward(judge=_fake_judge)
    with pytest.raises(ValueError, match="metadata"):
        reward([_solid((0, 0, 0))], ["a"], None)
    with pytest.raises(ValueError, match="2 images but 1"):
        reward([_solid((0, 0, 0))] * 2, ["a"], [{"threshold": 0}] * 2)


def test_tensor_images_convert_like_pil():
    t = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    (img,) = to_pil_list(t)
    assert img.size == (2, 2) and img.getpixel((0, 0)) == (0, 128, 255)


def test_shapes_reward_uses_the_real_judge_on_ground_truth_renders():
    from simplear.data.shapes import render_scene, scene_from_metadata
    from simplear.eval.suite import make_suite

    suite = make_suite(seed=0)
    meta = [m for m in suite if m["tag"] == "counting"][:2] + [m for m in suite if m["tag"] == "color_attr"][:2]
    rng = np.random.default_rng(0)
    truth = [render_scene(scene_from_metadata(m, rng), 128) for m in meta]
    prompts = [m["prompt"] for m in meta]
    assert ShapesReward("strict")(truth, prompts, meta).tolist() == [1.0] * 4
    assert ShapesReward("partial")(truth, prompts, meta).tolist() == [1.0] * 4
    # Each image scored against another prompt's spec: wrong, and partial credit sits in between.
    swapped = meta[1:] + meta[:1]
    strict = ShapesReward("strict")(truth, prompts, swapped)
    partial = ShapesReward("partial")(truth, prompts, swapped)
    assert strict.sum().item() == 0.0
    assert (partial < 1.0).all() and (partial >= strict).all() and partial.max() > 0.0
    blank = [Image.new("RGB", (128, 128), (128, 128, 128))] * 4
    assert ShapesReward("partial")(blank, prompts, meta).max().item() < 1.0


def test_nothing_else_clauses():
    from simplear.rewards.shapes import nothing_else

    two = {"tag": "two_object", "include": [{"class": "star", "count": 1}, {"class": "heart", "count": 1}]}
    limits = {c["class"]: c["count"] for c in nothing_else(two)}
    assert limits == {"circle": 1, "square": 1, "triangle": 1, "star": 2, "heart": 2, "cross": 1}
    same = {"tag": "colors", "include": [{"class": "star", "count": 1, "color": "red"},
                                         {"class": "star", "count": 2}]}
    assert {c["class"]: c["count"] for c in nothing_else(same)}["star"] == 4
    # A counting prompt already limits its class: only the other classes are added.
    counting = {"tag": "counting", "include": [{"class": "cross", "count": 3}],
                "exclude": [{"class": "cross", "count": 4}]}
    assert "cross" not in {c["class"] for c in nothing_else(counting)} and len(nothing_else(counting)) == 5


def test_exact_modes_penalise_extra_objects_that_geneval_allows():
    from simplear.data.shapes import render_scene, scene_from_metadata

    meta = {"tag": "two_object", "include": [{"class": "star", "count": 1}, {"class": "heart", "count": 1}],
            "prompt": "a photo of a star and a heart"}
    extra_class = {**meta, "include": [*meta["include"], {"class": "square", "count": 1}]}
    extra_star = {**meta, "include": [{"class": "star", "count": 2}, {"class": "heart", "count": 1}]}
    rng = np.random.default_rng(0)
    images = [render_scene(scene_from_metadata(m, rng), 128) for m in (meta, extra_class, extra_star)]
    metas, prompts = [meta] * 3, [meta["prompt"]] * 3
    assert ShapesReward("strict")(images, prompts, metas).tolist() == [1.0, 1.0, 1.0]  # GenEval's rules
    assert ShapesReward("exact")(images, prompts, metas).tolist() == [1.0, 0.0, 0.0]
    # Two include clauses (2 checks) plus "nothing else" as one more: 3/3, 2/3, 2/3.
    assert torch.allclose(ShapesReward("exact-partial")(images, prompts, metas),
                          torch.tensor([1.0, 2 / 3, 2 / 3]))
    blank = [Image.new("RGB", (128, 128), (128, 128, 128))]
    assert torch.allclose(ShapesReward("exact-partial")(blank, prompts[:1], metas[:1]), torch.tensor([1 / 3]))
    reward = build_reward("0.5*shapes:exact+0.5*shapes:exact-partial")
    assert torch.allclose(reward(images, prompts, metas), torch.tensor([1.0, 1 / 3, 1 / 3]))


# ---- a tiny random CLIP, written to disk the way Hugging Face lays a CLIP folder out ----

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _LETTERS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(cfg).eval().save_pretrained(folder)
    pre = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, "do_resize": True,
           "do_center_crop": True, "do_normalize": True, "resample": 3, "rescale_factor": 1 / 255,
           "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    return folder


def _random_images(n, size=(48, 40), seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def test_clip_preprocess_matches_transformers_pil_processor(tiny_clip):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    images = _random_images(3) + _random_images(1, size=(30, 50), seed=1)
    ours = ClipPreprocess.from_folder(tiny_clip)(images)
    theirs = CLIPImageProcessorPil.from_pretrained(tiny_clip)(images=images, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (4, 3, 32, 32)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_clip_reward_is_the_cosine_of_the_model_embeddings(tiny_clip):
    from transformers import CLIPModel

    reward = ClipReward(tiny_clip, device="cpu")
    images = _random_images(3)
    prompts = ["a red circle", "two blue squares", "a star"]
    got = reward(images, prompts, None)

    model = CLIPModel.from_pretrained(tiny_clip).eval()
    pixels = ClipPreprocess.from_folder(tiny_clip)(images)
    batch = reward.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=pixels)
    img = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
    txt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
    expected = (img * txt).sum(-1)
    assert got.shape == (3,) and torch.allclose(got, expected, atol=1e-5)
    assert got.abs().max() <= 1.0
    # Batching does not change the values; a different prompt changes them.
    small = ClipReward(tiny_clip, device="cpu", batch_size=2)
    assert torch.allclose(small(images, prompts, None), got, atol=1e-5)
    assert not torch.allclose(reward(images, ["zzz zzz", "q", "a"], None), got)


def test_clip_reward_errors(tiny_clip, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClipReward(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        ClipReward(tmp_path)
    reward = ClipReward(tiny_clip)
    with pytest.raises(ValueError, match="1 prompts"):
        reward(_random_images(2), ["a"], None)


def test_weighted_reward_and_spec_strings(tiny_clip):
    a = lambda images, prompts, metadata: torch.tensor([1.0, 2.0])  # noqa: E731
    b = lambda images, prompts, metadata: torch.tensor([10.0, 0.0])  # noqa: E731
    combo = WeightedReward([(0.5, a), (0.1, b)])
    assert torch.allclose(combo([None, None], ["x", "y"], None), torch.tensor([1.5, 1.0]))
    with pytest.raises(ValueError):
        WeightedReward([])

    assert isinstance(build_reward("shapes"), ShapesReward)
    assert build_reward("shapes:strict").mode == "strict"
    mixed = build_reward(f"0.8*shapes + 0.2*clip:{tiny_clip}")
    assert isinstance(mixed, WeightedReward)
    assert [w for w, _ in mixed.terms] == [0.8, 0.2]
    assert isinstance(mixed.terms[1][1], ClipReward)
    for bad in ("", "dino", "x*shapes", "clip", "shapes:lenient"):
        with pytest.raises(ValueError):
            build_reward(bad)
