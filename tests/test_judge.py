"""GenEval's rules on hand-made detections: counts, exclusion, colours, positions, partial credit."""

import json

import pytest

from simplear.eval.detector import Detection
from simplear.eval.judge import JudgeConfig, evaluate_detections, relative_position, validate_metadata


def det(cls, color, box, confidence=0.9):
    return Detection(cls=cls, color=color, box=tuple(float(v) for v in box), confidence=confidence)


LEFT = (0, 40, 20, 60)
RIGHT = (80, 40, 100, 60)


def test_relative_position_follows_geneval_threshold():
    assert relative_position(LEFT, RIGHT) == {"left of"}
    assert relative_position(RIGHT, LEFT) == {"right of"}
    assert relative_position((40, 0, 60, 20), (40, 80, 60, 100)) == {"above"}
    # Centres 10 px apart, boxes 20 px wide: the offset shrinks by 0.1 * 40 = 4 px -> 6 / 10 = 0.6.
    assert relative_position((0, 0, 20, 20), (10, 0, 30, 20)) == {"left of"}
    # Centres 3 px apart: 3 - 4 < 0, so no relation at all (GenEval's "too close to tell").
    assert relative_position((0, 0, 20, 20), (3, 0, 23, 20)) == set()
    # A diagonal offset: both components 0.707 > 0.5, so two relations hold.
    assert relative_position((0, 0, 10, 10), (50, 50, 60, 60)) == {"left of", "above"}
    # Mostly to the side, slightly above: only "left of" (dy / |offset| < 0.5).
    assert relative_position((0, 40, 10, 50), (80, 50, 90, 60)) == {"left of"}


def test_counting_needs_include_and_exclude():
    meta = {"tag": "counting", "include": [{"class": "star", "count": 2}], "exclude": [{"class": "star", "count": 3}]}
    two = [det("star", "red", LEFT), det("star", "blue", RIGHT)]
    assert evaluate_detections(two, meta).correct
    one = evaluate_detections(two[:1], meta)
    assert not one.correct and "expected star>=2, found 1" in one.reason
    three = evaluate_detections(two + [det("star", "red", (40, 0, 60, 20))], meta)
    assert not three.correct and "expected star<3, found 3" in three.reason
    assert three.score == pytest.approx(0.5)  # count ok, exclude failed


def test_colour_checked_per_object_and_requested_colour_preferred():
    meta = {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "blue"}]}
    # A more confident red circle does not hide the blue one (see judge.py on GenEval's order).
    image = [det("circle", "red", LEFT, 0.99), det("circle", "blue", RIGHT, 0.8)]
    assert evaluate_detections(image, meta).correct
    wrong = evaluate_detections([det("circle", "red", LEFT)], meta)
    assert not wrong.correct and "expected blue circle>=1, found 0 blue; and 1 red" in wrong.reason
    assert wrong.score == pytest.approx(0.5)
    assert [c["check"] for c in wrong.details["checks"]] == ["count", "color"]


def test_position_relative_to_matched_target():
    meta = {
        "tag": "position",
        "include": [{"class": "square", "count": 1}, {"class": "cross", "count": 1, "position": ["left of", 0]}],
        "prompt": "a photo of a cross left of a square",
    }
    ok = evaluate_detections([det("square", "red", RIGHT), det("cross", "green", LEFT)], meta)
    assert ok.correct and ok.score == 1.0 and ok.reason == ""
    flipped = evaluate_detections([det("square", "red", LEFT), det("cross", "green", RIGHT)], meta)
    assert not flipped.correct
    assert "expected cross left of target, found right of target" in flipped.reason
    assert flipped.score == pytest.approx(2 / 3)
    missing = evaluate_detections([det("cross", "green", LEFT)], meta)
    assert not missing.correct and "expected square>=1, found 0" in missing.reason
    assert "no target for cross to be left of" in missing.reason
    assert missing.score == pytest.approx(1 / 3)


def test_low_confidence_blobs_are_not_objects():
    meta = {"tag": "counting", "include": [{"class": "heart", "count": 1}], "exclude": [{"class": "heart", "count": 2}]}
    image = [det("heart", "pink", LEFT, 0.9), det("heart", "pink", RIGHT, 0.3)]
    verdict = evaluate_detections(image, meta)
    assert verdict.correct
    assert len(verdict.details["detections"]) == 2 and verdict.details["counted"] == 1
    assert verdict.details["classes"] == {"heart": 1}  # what was counted, per class
    lenient = evaluate_detections(image, meta, JudgeConfig(min_confidence=0.2, min_confidence_large=0.2))
    assert not lenient.correct
    # The bar rises with size: 0.6 counts for a 12-pixel box, not for a 32-pixel one.
    config = JudgeConfig()
    assert config.threshold(det("heart", "pink", (0, 0, 12, 12))) == pytest.approx(0.5)
    assert config.threshold(det("heart", "pink", (0, 0, 22, 20))) == pytest.approx(0.625)
    assert config.threshold(det("heart", "pink", (0, 0, 40, 40))) == pytest.approx(0.75)
    json.dumps(verdict.details)  # details are JSON-ready (they go into results.jsonl)


@pytest.mark.parametrize(
    "meta, field, allowed",
    [
        ({"include": [{"class": "bench", "count": 1}]}, "include[0].class", "circle, square, triangle"),
        ({"include": [{"class": "star", "count": 1, "color": "teal"}]}, "include[0].color", "red, orange, yellow"),
        ({"include": [{"class": "star", "count": 1}], "exclude": [{"class": "dog", "count": 2}]}, "exclude[0].class", "heart"),
        (
            {"include": [{"class": "star", "count": 1}, {"class": "heart", "count": 1, "position": ["near", 0]}]},
            "include[1].position",
            "left of, right of, above, below",
        ),
    ],
)
def test_unknown_words_name_the_field_and_the_allowed_values(meta, field, allowed):
    with pytest.raises(ValueError) as err:
        validate_metadata(meta)
    assert field in str(err.value) and allowed in str(err.value)


def test_malformed_metadata_is_rejected():
    for bad in ({}, {"include": []}, {"include": [{"class": "star", "count": 0}]}, "a photo of a star"):
        with pytest.raises(ValueError):
            validate_metadata(bad)
    with pytest.raises(ValueError, match="earlier include clause"):
        validate_metadata({"include": [{"class": "star", "count": 1, "position": ["above", 0]}]})


def test_real_geneval_metadata_is_refused_clearly(shared_dir):
    line = json.loads((shared_dir / "benchmarks/geneval/evaluation_metadata.jsonl").read_text().splitlines()[0])
    with pytest.raises(ValueError, match=r"include\[0\]\.class: unknown class 'bench'"):
        validate_metadata(line)
