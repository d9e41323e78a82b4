"""ShapesWorld captions: GenEval's canonical phrasings, natural variants, truthful long captions."""

import dataclasses

import numpy as np
import pytest

from simplear.data.captions import canonical_prompt, noun_phrase, scene_captions, scene_metadata
from simplear.data.shapes import CLASSES, COLORS, TAGS, sample_scene, scene_from_metadata


@pytest.mark.parametrize(
    "meta, prompt",
    [
        (
            {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}]},
            "a photo of a red circle",
        ),
        (
            {
                "tag": "counting",
                "include": [{"class": "star", "count": 2}],
                "exclude": [{"class": "star", "count": 3}],
            },
            "a photo of two stars",
        ),
        (
            {
                "tag": "two_object",
                "include": [{"class": "circle", "count": 1}, {"class": "heart", "count": 1}],
            },
            "a photo of a circle and a heart",
        ),
        (
            {
                "tag": "position",
                "include": [
                    {"class": "square", "count": 1},
                    {"class": "cross", "count": 1, "position": ["left of", 0]},
                ],
            },
            "a photo of a cross left of a square",
        ),
        (
            {
                "tag": "color_attr",
                "include": [
                    {"class": "star", "count": 1, "color": "purple"},
                    {"class": "triangle", "count": 1, "color": "orange"},
                ],
            },
            "a photo of a purple star and an orange triangle",
        ),
        ({"tag": "single_object", "include": [{"class": "cross", "count": 1}]}, "a photo of a cross"),
        (
            {
                "tag": "counting",
                "include": [{"class": "cross", "count": 4}],
                "exclude": [{"class": "cross", "count": 5}],
            },
            "a photo of four crosses",
        ),
    ],
)
def test_canonical_geneval_phrasings(meta, prompt):
    assert canonical_prompt(meta) == prompt


def test_articles_and_plurals():
    assert noun_phrase("heart", 1, "orange") == "an orange heart"
    assert noun_phrase("heart", 1) == "a heart"
    assert noun_phrase("circle", 2, "red") == "two red circles"
    assert noun_phrase("cross", 3) == "three crosses"


def test_counting_scene_has_natural_variants():
    meta = {
        "tag": "counting",
        "include": [{"class": "heart", "count": 3, "color": "green"}],
        "exclude": [{"class": "heart", "count": 4}],
    }
    seen = set()
    for seed in range(30):
        seen.update(scene_captions(scene_from_metadata(meta, seed), seed))
    assert "a photo of three green hearts" in seen
    assert "three green hearts" in seen
    assert "there are three green hearts" in seen


def test_position_scene_has_natural_relation_wording():
    meta = {
        "tag": "position",
        "include": [
            {"class": "square", "count": 1, "color": "blue"},
            {"class": "circle", "count": 1, "color": "red", "position": ["left of", 0]},
        ],
    }
    caps = scene_captions(scene_from_metadata(meta, 0), 0)
    assert caps[0] == "a photo of a red circle left of a blue square"
    assert any("a red circle to the left of a blue square" in c for c in caps)


@pytest.mark.parametrize("tag", TAGS)
def test_every_scene_gets_canonical_long_and_short_captions(tag):
    rng = np.random.default_rng(TAGS.index(tag))
    for _ in range(20):
        scene = sample_scene(rng, tag=tag)
        caps = scene_captions(scene, rng)
        meta = scene_metadata(scene)
        assert caps[0] == meta["prompt"] and caps[0].startswith("a photo of ")
        assert len(caps) >= 3 and len(set(caps)) == len(caps)
        long = caps[1]
        assert len(long) > len(caps[0])
        for obj in scene.objects:  # the long caption names every object's true colour
            assert obj.color in long and obj.cls[:4] in long
        for caption in caps:  # never a colour the scene does not have
            named = {c for c in COLORS if f" {c} " in f" {caption} "}
            assert named <= {o.color for o in scene.objects}, caption
            assert " a orange" not in caption and " a a" not in caption


def test_scene_metadata_matches_geneval_schema():
    scene = sample_scene(0, tag="counting")
    meta = scene_metadata(scene)
    assert list(meta) == ["tag", "include", "exclude", "prompt"]
    scene = sample_scene(0, tag="position")
    meta = scene_metadata(scene)
    assert list(meta) == ["tag", "include", "prompt"]
    assert meta["include"][1]["position"][1] == 0 and "position" not in meta["include"][0]


def test_captions_are_deterministic():
    scene = sample_scene(11)
    assert scene_captions(scene, 4) == scene_captions(scene, 4)


def test_long_captions_name_the_background_style():
    from simplear.data.shapes import ShapesConfig

    def long(style):
        return scene_captions(sample_scene(3, ShapesConfig(background=style)), 0)[1]

    assert "plain background" in long("plain") and "mid-grey" in long("plain")
    assert "plain background" in long("flat")
    textured = [scene_captions(sample_scene(s), 0)[1] for s in range(10)]
    assert not any("plain" in c for c in textured)
    assert any("textured background" in c or "gradient background" in c for c in textured)


def _raster_first(scene):
    """The class of the object a raster scan meets first (top edge, then centre)."""
    return min(scene.objects, key=lambda o: (round(o.cy - o.size / 2, 6), round(o.cx, 6))).cls


@pytest.mark.parametrize("tag", ["two_object", "color_attr"])
def test_raster_order_names_the_first_drawn_object_first(tag):
    from simplear.data.captions import raster_ordered

    rng = np.random.default_rng(5)
    swapped = 0
    for _ in range(30):
        scene = sample_scene(rng, tag=tag)
        ordered = raster_ordered(scene)
        assert ordered.objects == tuple(
            dataclasses.replace(o, clause=ordered.objects[i].clause) for i, o in enumerate(scene.objects)
        )  # same objects, only clause numbers can change
        first = _raster_first(scene)
        assert ordered.metadata["include"][0]["class"] == first
        assert all(ordered.metadata["include"][o.clause]["class"] == o.cls for o in ordered.objects)
        caps = scene_captions(scene, 7, order="raster")
        assert caps[0] == scene_metadata(ordered)["prompt"]
        for caption in caps:  # every caption names the first-drawn object's class first
            words = caption.replace(",", " ").split()
            named = [w for w in words if w.rstrip("s") in CLASSES or w in CLASSES]
            assert named[0].startswith(first[:4]), caption
        swapped += ordered.metadata["include"] != scene.metadata["include"]
    assert 5 < swapped < 25  # about half the scenes list their clauses the other way round


def test_raster_order_leaves_relations_and_single_clauses_alone():
    from simplear.data.captions import raster_ordered

    for tag in ("single_object", "counting", "colors", "position"):
        for seed in range(5):
            scene = sample_scene(seed, tag=tag)
            assert raster_ordered(scene) is scene
            assert scene_captions(scene, 3, order="raster")[0] == scene_captions(scene, 3)[0]


def test_given_order_captions_are_unchanged_and_bad_order_is_refused():
    # "given" is what every dataset before caption_order was written with: identical captions.
    scene = sample_scene(np.random.default_rng(2), tag="two_object")
    assert scene_captions(scene, 9) == scene_captions(scene, 9, order="given")
    with pytest.raises(ValueError, match="order must be one of"):
        scene_captions(scene, 9, order="alphabetical")
