"""ShapesWorld core: vocabulary, geometry, background limits, scenes that satisfy metadata."""

import itertools

import numpy as np
import pytest

from simplear.data import shapes as sw
from simplear.data.shapes import (
    BACKGROUND_LEVEL_RANGE,
    BACKGROUND_MAX_CHROMA,
    CLASSES,
    COLORS,
    COUNT_WORDS,
    PLURALS,
    RELATIONS,
    TAGS,
    Scene,
    SceneObject,
    ShapesConfig,
    geneval_offset,
    relation_holds,
    render_array,
    render_scene,
    sample_background,
    sample_scene,
    scene_from_metadata,
    shape_mask,
)


def test_vocabulary_is_the_contract():
    assert CLASSES == ("circle", "square", "triangle", "star", "heart", "cross")
    assert [PLURALS[c] for c in CLASSES] == ["circles", "squares", "triangles", "stars", "hearts", "crosses"]
    assert list(COLORS) == [
        "red",
        "orange",
        "yellow",
        "green",
        "blue",
        "purple",
        "pink",
        "brown",
        "black",
        "white",
    ]
    assert COUNT_WORDS == {1: "one", 2: "two", 3: "three", 4: "four"}
    assert RELATIONS == ("left of", "right of", "above", "below")


def test_palette_is_well_separated():
    rgb = {k: np.array(v, float) for k, v in COLORS.items()}
    dists = {(a, b): np.linalg.norm(rgb[a] - rgb[b]) for a, b in itertools.combinations(rgb, 2)}
    assert min(dists.values()) >= 90, min(dists.items(), key=lambda kv: kv[1])
    for a, b in itertools.combinations(["brown", "orange", "red", "pink", "purple"], 2):
        assert np.linalg.norm(rgb[a] - rgb[b]) >= 100, (a, b)


@pytest.mark.parametrize("cls", CLASSES)
def test_shape_mask_fills_its_box_and_is_antialiased(cls):
    m = shape_mask(cls, 48)
    assert m.shape == (48, 48) and m.dtype == np.float32
    assert m.min() >= 0.0 and m.max() <= 1.0
    # The shape touches all four sides of its box: a detected box is the object's box.
    assert m[0].max() > 0 and m[-1].max() > 0 and m[:, 0].max() > 0 and m[:, -1].max() > 0
    if cls != "square":
        assert ((m > 0.05) & (m < 0.95)).any()  # partial coverage at edges: anti-aliased
    assert not m.flags.writeable


def test_shape_masks_have_the_expected_areas_and_differ():
    areas = {c: float(shape_mask(c, 64).mean()) for c in CLASSES}
    assert abs(areas["circle"] - np.pi / 4) < 0.01
    assert areas["square"] == pytest.approx(1.0)
    assert abs(areas["triangle"] - 0.5) < 0.01
    for a, b in itertools.combinations(CLASSES, 2):
        ma, mb = shape_mask(a, 32) > 0.5, shape_mask(b, 32) > 0.5
        iou = (ma & mb).sum() / (ma | mb).sum()
        assert iou < 0.9, (a, b, iou)


def test_shape_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="allowed: circle, square"):
        shape_mask("hexagon", 10)
    with pytest.raises(ValueError, match="size"):
        shape_mask("circle", 0)


def test_backgrounds_stay_inside_the_published_limits_and_vary():
    rng = np.random.default_rng(0)
    means, palette = [], np.array(list(COLORS.values()), float)
    for _ in range(40):
        img = render_array(Scene((), sample_background(rng)), 64).astype(float)
        level = img.mean(axis=2)
        chroma = img.max(axis=2) - img.min(axis=2)
        assert BACKGROUND_LEVEL_RANGE[0] - 1 <= level.min() and level.max() <= BACKGROUND_LEVEL_RANGE[1] + 1
        assert chroma.max() <= BACKGROUND_MAX_CHROMA + 1
        nearest = np.linalg.norm(img.reshape(-1, 1, 3) - palette[None], axis=2).min()
        assert nearest > 60
        assert img.std(axis=(0, 1)).max() > 0.5  # never one flat colour
        means.append(img.mean(axis=(0, 1)))
    assert np.std(means, axis=0).min() > 5  # backgrounds differ from scene to scene


def test_objects_are_painted_in_their_exact_palette_colour():
    bg = sample_background(1)
    scene = Scene((SceneObject("square", "brown", 0.5, 0.5, 0.3),), bg, {})
    img = render_array(scene, 64)
    assert tuple(img[32, 32]) == COLORS["brown"]
    assert render_scene(scene, 64).mode == "RGB"


def test_render_is_deterministic_and_any_resolution():
    a, b = sample_scene(5), sample_scene(5)
    assert a == b
    for r in (64, 128, 256):
        assert render_array(a, r).shape == (r, r, 3)
        assert render_array(a, r).tobytes() == render_array(b, r).tobytes()
    assert render_array(sample_scene(6), 64).tobytes() != render_array(a, 64).tobytes()
    with pytest.raises(ValueError, match="resolution"):
        render_array(a, 8)


def test_geneval_offset_matches_a_hand_computation():
    # A at centre (10, 50), B at (50, 50), both 20 wide: offset -40, shrink 0.1 * 40 = 4.
    a, b = (0, 40, 20, 60), (40, 40, 60, 60)
    dx, dy = geneval_offset(a, b)
    assert dx == pytest.approx(-36 / 40) and dy == 0.0
    assert relation_holds(a, b, "left of") and not relation_holds(a, b, "right of")
    assert relation_holds(b, a, "right of", margin=0.3)
    assert not relation_holds(a, b, "above") and not relation_holds(a, b, "below")


def _count(scene, cls, color=None):
    return sum(1 for o in scene.objects if o.cls == cls and (color is None or o.color == color))


@pytest.mark.parametrize("tag", TAGS)
def test_sampled_scenes_satisfy_their_metadata(tag):
    rng = np.random.default_rng(TAGS.index(tag))
    for _ in range(40):
        scene = sample_scene(rng, tag=tag)
        meta = scene.metadata
        assert meta["tag"] == tag
        for clause in meta["include"]:
            assert _count(scene, clause["class"], clause.get("color")) == clause["count"]
        for clause in meta.get("exclude", []):
            assert _count(scene, clause["class"]) < clause["count"]
        assert len(scene.objects) == sum(c["count"] for c in meta["include"])
        boxes = [o.box(64) for o in scene.objects]
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 and 0 <= y0 and x1 <= 64 and y1 <= 64
            assert x1 - x0 >= 10  # objects stay >= 10 px at 64 px
        for a, b in itertools.combinations(boxes, 2):
            gap = max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3])
            assert gap >= 1, (a, b)  # separated: countable
        for i, clause in enumerate(meta["include"]):
            if "position" in clause:
                rel, ref = clause["position"]
                for r in (64, 128, 256):
                    assert relation_holds(scene.objects[i].box(r), scene.objects[ref].box(r), rel, 0.15)
    if tag == "counting":
        assert "exclude" in meta and meta["exclude"][0]["count"] == meta["include"][0]["count"] + 1


def test_scene_from_metadata_follows_geneval_position_form():
    meta = {
        "tag": "position",
        "include": [
            {"class": "square", "count": 1},
            {"class": "cross", "count": 1, "position": ["left of", 0]},
        ],
        "prompt": "a photo of a cross left of a square",
    }
    for seed in range(20):
        scene = scene_from_metadata(meta, seed)
        square = next(o for o in scene.objects if o.cls == "square")
        cross = next(o for o in scene.objects if o.cls == "cross")
        assert cross.cx < square.cx
        assert relation_holds(cross.box(128), square.box(128), "left of", 0.2)


def test_heldout_pairs_never_appear_in_sampled_scenes():
    config = ShapesConfig(heldout=(("red", "circle"), ("blue", "square"), ("green", "star")))
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(300):
        for o in sample_scene(rng, config).objects:
            seen.add((o.color, o.cls))
    assert not seen & set(config.heldout)
    assert len(seen) > 40  # the rest of the (colour, class) grid is used
    default = ShapesConfig()
    assert len(default.heldout) >= 5
    for _ in range(200):
        assert all((o.color, o.cls) not in default.heldout for o in sample_scene(rng).objects)


def test_requested_heldout_pair_is_still_rendered_for_evaluation():
    meta = {"tag": "colors", "include": [{"class": "star", "count": 1, "color": "blue"}]}
    scene = scene_from_metadata(meta, 0, ShapesConfig(heldout=(("blue", "star"),)))
    assert [(o.color, o.cls) for o in scene.objects] == [("blue", "star")]


@pytest.mark.parametrize(
    "meta, match",
    [
        (
            {"include": [{"class": "hexagon", "count": 1}]},
            r"include\[0\]\.class: unknown class 'hexagon'; allowed: circle",
        ),
        (
            {"include": [{"class": "star", "count": 1, "color": "teal"}]},
            r"include\[0\]\.color: .*allowed: red, orange",
        ),
        ({"include": [{"class": "star", "count": 0}]}, r"include\[0\]\.count"),
        ({"include": []}, "include"),
        ({"tag": "colours", "include": [{"class": "star", "count": 1}]}, "tag: unknown tag"),
        (
            {
                "include": [
                    {"class": "star", "count": 1},
                    {"class": "heart", "count": 1, "position": ["near", 0]},
                ]
            },
            r"include\[1\]\.position: unknown relation 'near'; allowed: left of",
        ),
        ({"include": [{"class": "star", "count": 1, "position": ["above", 0]}]}, "earlier include clause"),
        (
            {"include": [{"class": "star", "count": 3}], "exclude": [{"class": "star", "count": 3}]},
            "excludes",
        ),
        ({"include": [{"class": "star", "count": 9}]}, "at most"),
    ],
)
def test_bad_metadata_is_a_clear_error(meta, match):
    with pytest.raises(ValueError, match=match):
        scene_from_metadata(meta, 0)


def test_flat_and_plain_backgrounds_are_one_tone_inside_the_limits():
    tones = set()
    for seed in range(20):
        for style in ("flat", "plain"):
            img = render_array(Scene((), sample_background(seed, style)), 32).astype(float)
            assert img.std(axis=(0, 1)).max() == 0.0  # one colour, no texture or grain
            level, chroma = img[0, 0].mean(), img[0, 0].max() - img[0, 0].min()
            assert BACKGROUND_LEVEL_RANGE[0] <= level <= BACKGROUND_LEVEL_RANGE[1] and chroma <= BACKGROUND_MAX_CHROMA
            tones.add((style, tuple(img[0, 0])))
    assert len([t for t in tones if t[0] == "plain"]) == 1 and len([t for t in tones if t[0] == "flat"]) == 20
    scene = sample_scene(3, ShapesConfig(background="flat"))
    assert scene.background.grain == 0.0 and scene.background.texture_amp == 0.0


@pytest.mark.parametrize("tag", TAGS)
def test_grid_scenes_put_every_box_on_the_grid_and_still_satisfy_their_metadata(tag):
    config = ShapesConfig(grid=16, background="plain")
    rng = np.random.default_rng(10 + TAGS.index(tag))
    for _ in range(30):
        scene = sample_scene(rng, config, tag=tag)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box(128)
            assert x0 % 8 == 0 and y0 % 8 == 0 and x1 % 8 == 0 and y1 % 8 == 0, obj
            assert 8 <= x0 and x1 <= 120 and 8 <= y0 and y1 <= 120  # margin 0.03 -> one whole cell
            assert x1 - x0 in (24, 32, 40)  # sizes 0.17-0.32 -> 3, 4 or 5 cells
        for clause in scene.metadata["include"]:
            assert _count(scene, clause["class"], clause.get("color")) == clause["count"]
        boxes = [o.box(128) for o in scene.objects]
        for a, b in itertools.combinations(boxes, 2):
            assert max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3]) >= 8  # a whole free cell
        for i, clause in enumerate(scene.metadata["include"]):
            if "position" in clause:
                rel, ref = clause["position"]
                assert relation_holds(boxes[i], boxes[ref], rel, 0.15)


def test_config_validation():
    with pytest.raises(ValueError, match="heldout colour"):
        ShapesConfig(heldout=(("teal", "star"),))
    with pytest.raises(ValueError, match="min_size"):
        ShapesConfig(min_size=0.05)
    with pytest.raises(ValueError, match="rng"):
        sample_scene("seed")
    with pytest.raises(ValueError, match="background must be one of"):
        ShapesConfig(background="noisy")
    with pytest.raises(ValueError, match="background style"):
        sample_background(0, "noisy")
    with pytest.raises(ValueError, match="grid"):
        ShapesConfig(grid=2)
    with pytest.raises(ValueError, match="no whole cell count"):
        ShapesConfig(grid=4, min_size=0.3, max_size=0.45)
    assert sw.article("orange") == "an" and sw.article("red") == "a"
