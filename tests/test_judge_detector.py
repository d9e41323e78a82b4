"""The detector and `judge` on rendered pixels: boxes, classes, colours, blobs, cut shapes."""

import numpy as np
import pytest
from PIL import Image

from simplear.data.shapes import (
    CLASSES,
    COLORS,
    Background,
    Scene,
    SceneObject,
    render_array,
    scene_from_metadata,
)
from simplear.eval.detector import detect, label_pixels
from simplear.eval.judge import judge, judge_batch

BG = Background(color_a=(120.0, 125.0, 130.0), color_b=(150.0, 145.0, 140.0), angle=0.7, seed=3)


def scene(*objects):
    return Scene(objects=tuple(SceneObject(*o) for o in objects), background=BG)


def test_background_is_never_an_object_and_palette_colours_are_exact():
    rgb = render_array(scene(), 64)
    assert (label_pixels(rgb) == -1).all()
    palette = np.asarray(list(COLORS.values()), dtype=np.uint8)[None]
    assert label_pixels(palette).tolist() == [list(range(len(COLORS)))]


@pytest.mark.parametrize("resolution", [64, 128])
def test_every_class_and_colour_is_found_with_its_box(resolution):
    for i, cls in enumerate(CLASSES):
        color = list(COLORS)[(3 * i + 1) % len(COLORS)]
        other = CLASSES[(i + 2) % len(CLASSES)]
        sc = scene((cls, color, 0.3, 0.35, 0.28), (other, "white", 0.72, 0.68, 0.2))
        found = detect(render_array(sc, resolution))
        assert sorted((d.cls, d.color) for d in found) == sorted([(cls, color), (other, "white")])
        for d in found:
            obj = next(o for o in sc.objects if o.cls == d.cls)
            # Star tips and the triangle's apex cover under half a pixel: 2 px of slack.
            assert np.abs(np.subtract(d.box, obj.box(resolution))).max() <= 2.0
            assert d.confidence > 0.75


def test_ground_truth_render_is_correct_and_wrong_class_is_not():
    meta = {"tag": "two_object", "include": [{"class": "heart", "count": 1}, {"class": "cross", "count": 1}]}
    image = render_array(scene_from_metadata(meta, np.random.default_rng(1)), 128)
    verdict = judge(image, meta)
    assert verdict.correct and verdict.score == 1.0
    other = {"tag": "two_object", "include": [{"class": "heart", "count": 1}, {"class": "star", "count": 1}]}
    wrong = judge(image, other)
    assert not wrong.correct and wrong.score == pytest.approx(0.5)
    assert "expected star>=1, found 0" in wrong.reason


def test_stray_blob_does_not_count_but_an_object_like_one_does():
    meta = {"tag": "counting", "include": [{"class": "circle", "count": 2}], "exclude": [{"class": "circle", "count": 3}]}
    base = render_array(scene(("circle", "red", 0.25, 0.3, 0.25), ("circle", "red", 0.7, 0.3, 0.25)), 128)
    assert judge(base, meta).correct
    smudge = base.copy()
    rng = np.random.default_rng(0)
    ys, xs = np.nonzero(rng.random((24, 24)) < 0.35)  # a ragged, speckled red smudge
    smudge[88 + ys, 40 + xs] = COLORS["red"]
    smudge[96:98, 30:70] = COLORS["red"]  # with a thin streak through it
    assert judge(smudge, meta).correct
    third = render_array(
        scene(("circle", "red", 0.25, 0.3, 0.25), ("circle", "red", 0.7, 0.3, 0.25), ("circle", "red", 0.5, 0.78, 0.2)),
        128,
    )
    verdict = judge(third, meta)
    assert not verdict.correct and "expected circle<3, found 3" in verdict.reason


def test_touching_objects_of_two_colours_are_split():
    sc = scene(("square", "blue", 0.35, 0.5, 0.3), ("square", "yellow", 0.65, 0.5, 0.3))
    found = detect(render_array(sc, 128))
    assert sorted((d.cls, d.color) for d in found) == [("square", "blue"), ("square", "yellow")]


def test_shape_cut_by_the_border_keeps_its_class():
    for cls in ("circle", "star", "triangle"):
        sc = scene((cls, "green", 0.05, 0.5, 0.36))  # left half outside the image
        found = detect(render_array(sc, 128))
        assert [d.cls for d in found] == [cls]
        assert found[0].box[0] == 0.0


def test_colour_drift_and_noise_keep_the_colour():
    sc = scene(("heart", "orange", 0.5, 0.5, 0.4))
    rgb = render_array(sc, 64).astype(np.float32)
    drifted = rgb + np.array([-15.0, 12.0, 10.0]) + np.random.default_rng(0).normal(0, 6, rgb.shape)
    found = detect(np.clip(drifted, 0, 255).astype(np.uint8))
    assert [(d.cls, d.color) for d in found] == [("heart", "orange")]


def test_inputs_paths_floats_and_batches(tmp_path):
    meta = {"tag": "colors", "include": [{"class": "triangle", "count": 1, "color": "purple"}]}
    rgb = render_array(scene(("triangle", "purple", 0.5, 0.5, 0.3)), 64)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    verdicts = judge_batch([tmp_path / "a.png", rgb / 255.0, Image.fromarray(rgb)], [meta] * 3)
    assert [v.correct for v in verdicts] == [True, True, True]
    with pytest.raises(ValueError, match="2 images but 1"):
        judge_batch([rgb, rgb], [meta])
    with pytest.raises(FileNotFoundError):
        judge(tmp_path / "missing.png", meta)
    with pytest.raises(ValueError, match="H x W x 3"):
        detect(np.zeros((4, 4, 5), dtype=np.uint8))


def test_non_shapes_are_reported_but_not_counted():
    from PIL import ImageDraw

    from simplear.eval.judge import JudgeConfig

    config = JudgeConfig()
    drawings = {
        "ring": lambda d: d.ellipse([40, 40, 90, 90], outline=COLORS["red"], width=5),
        "crescent": lambda d: (d.ellipse([40, 40, 90, 90], fill=COLORS["red"]), d.ellipse([55, 35, 100, 85], fill=(130, 130, 130))),
        "diamond": lambda d: d.polygon([(64, 30), (98, 64), (64, 98), (30, 64)], fill=COLORS["red"]),
        "scribble": lambda d: d.line([(20, 20), (60, 80), (100, 30), (110, 100)], fill=COLORS["red"], width=6),
    }
    for name, draw in drawings.items():
        image = Image.new("RGB", (128, 128), (130, 130, 130))
        draw(ImageDraw.Draw(image))
        found = detect(image)
        assert len(found) == 1, name
        assert found[0].confidence < config.threshold(found[0]), (name, found[0])


def test_a_filled_image_is_not_a_square():
    meta = {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}]}
    red = np.zeros((64, 64, 3), dtype=np.uint8) + np.asarray(COLORS["red"], dtype=np.uint8)
    verdict = judge(red, meta)
    assert not verdict.correct
    assert verdict.details["detections"][0]["confidence"] == 0.0
