"""GenEval's scoring rules on top of the ShapesWorld detector: `judge(image, metadata)`.

GenEval (Ghosh et al., 2023, github.com/djghosh13/geneval, `evaluation/evaluate_images.py`)
scores an image against one metadata line: every `include` clause needs at least `count`
detections of its class, of its `color` when one is named, placed `position = [relation, index]`
relative to the objects matched for include clause `index`; every `exclude` clause fails when
`count` or more detections of its class are found (counting prompts exclude count + 1).

This module is only the rules: it works on `Detection`s (see `detector.py`), so it can be tested
without pixels. Two deliberate differences from GenEval, both because our detector is exact:

- GenEval checks the colour of the `count` most confident detections of a class. We pick the
  detections of the requested colour first (most confident first), so an image with a blue and a
  red circle satisfies "a blue circle" whatever the confidences; GenEval does not penalise extra
  objects outside counting prompts, and neither do we.
- Besides the binary `correct` we return `score`, the fraction of checks satisfied (partial
  credit, a dense GRPO reward). The checks are: one per include clause for its count, one for its
  colour, one for its position, and one per exclude clause. A clause whose objects are missing
  fails its colour and position checks too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simplear.data import shapes
from simplear.data.shapes import COLORS
from simplear.eval.detector import Detection, DetectorConfig, detect

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


@dataclass(frozen=True)
class JudgeConfig:
    """How detections become a verdict.

    The confidence thresholds play the role of GenEval's detector threshold: a blob whose shape
    matches no template well (a stray smudge) is reported in `details` but not counted.
    """

    position_threshold: float = 0.1  # GenEval's POSITION_THRESHOLD
    # Template IoU needed to count as an object. Pixelation alone costs a clean 10-pixel star a
    # third of its IoU, so small objects get the lenient threshold and large ones the strict
    # one (linear in between): a 30-pixel blob has no excuse for not looking like a shape.
    min_confidence: float = 0.5  # for boxes of at most `small_side` pixels
    min_confidence_large: float = 0.75  # for boxes of at least `large_side` pixels
    small_side: int = 12
    large_side: int = 32
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def threshold(self, detection: Detection) -> float:
        """The confidence `detection` needs to count as an object, given its size."""
        x0, y0, x1, y1 = detection.box
        side = max(x1 - x0, y1 - y0)
        t = (side - self.small_side) / max(self.large_side - self.small_side, 1)
        t = min(max(t, 0.0), 1.0)
        return self.min_confidence + t * (self.min_confidence_large - self.min_confidence)


@dataclass(frozen=True)
class Judgement:
    correct: bool
    reason: str
    score: float
    details: dict[str, Any]


def _allowed(values: Iterable[str]) -> str:
    return ", ".join(values)


def validate_metadata(metadata: Any) -> None:
    """Raise ValueError naming the bad field (and the allowed values) if `metadata` is unusable.

    ShapesWorld's schema check, without its limit on how many objects a scene can hold.
    """
    shapes.validate_metadata(metadata, max_objects=None)


def relative_position(box_a: Sequence[float], box_b: Sequence[float], threshold: float = 0.1) -> set[str]:
    """Relations of box A to box B, GenEval's way.

    The centre offset is shrunk on each axis by `threshold` times the sum of the two boxes' sizes
    (so touching or overlapping objects are not "left of" each other), then normalised by the
    length of the raw offset; a relation holds when its axis component exceeds 0.5. Image y grows
    downwards, so "above" is a negative y offset.
    """
    a = np.asarray(box_a, dtype=np.float64).reshape(2, 2)
    b = np.asarray(box_b, dtype=np.float64).reshape(2, 2)
    offset = a.mean(axis=0) - b.mean(axis=0)
    dims = np.abs(a[1] - a[0]) + np.abs(b[1] - b[0])
    revised = np.maximum(np.abs(offset) - threshold * dims, 0.0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def _select(candidates: list[Detection], count: int, color: str | None) -> list[Detection]:
    """The `count` detections a clause is checked on: the requested colour first, then the rest."""
    if color is None:
        return candidates[:count]
    same = [d for d in candidates if d.color == color]
    other = [d for d in candidates if d.color != color]
    return (same + other)[:count]


def evaluate_detections(
    detections: Sequence[Detection], metadata: dict, config: JudgeConfig | None = None
) -> Judgement:
    """Apply GenEval's rules to a list of detections (already validated metadata not required)."""
    config = config or JudgeConfig()
    validate_metadata(metadata)
    counted = [d for d in detections if d.confidence >= config.threshold(d)]
    by_class: dict[str, list[Detection]] = {}
    for det in sorted(counted, key=lambda d: -d.confidence):
        by_class.setdefault(det.cls, []).append(det)

    reasons: list[str] = []
    checks: list[dict[str, Any]] = []
    matched_groups: list[list[Detection] | None] = []

    def check(name: str, clause: str, ok: bool, **info: Any) -> bool:
        checks.append({"clause": clause, "check": name, "ok": bool(ok), **info})
        return ok

    for i, req in enumerate(metadata["include"]):
        where = f"include[{i}]"
        cls, count, color = req["class"], req["count"], req.get("color")
        candidates = by_class.get(cls, [])
        found = _select(candidates, count, color)
        matched = check("count", where, len(found) >= count, expected=count, found=len(candidates))
        if not matched:
            reasons.append(f"expected {cls}>={count}, found {len(candidates)}")
        if color is not None:
            colors = [d.color for d in found]
            ok = matched and colors.count(color) >= count
            check("color", where, ok, expected=color, found=colors)
            if matched and not ok:
                matched = False
                tally = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                reasons.append(f"expected {color} {cls}>={count}, found {colors.count(color)} {color}; and {tally}")
        if "position" in req:
            relation, target = req["position"]
            ok = False
            if matched and matched_groups[target] is None:
                reasons.append(f"no target for {cls} to be {relation}")
            elif matched:
                ok = True
                for obj in found:
                    for ref in matched_groups[target]:
                        rels = relative_position(obj.box, ref.box, config.position_threshold)
                        if relation not in rels:
                            ok = False
                            found_rels = " and ".join(sorted(rels)) or "no relation to"
                            reasons.append(f"expected {cls} {relation} target, found {found_rels} target")
                            break
                    if not ok:
                        break
            check("position", where, ok, expected=relation, target=target)
            matched = matched and ok
        matched_groups.append(found if matched else None)

    for i, req in enumerate(metadata.get("exclude", [])):
        cls, count = req["class"], req["count"]
        n = len(by_class.get(cls, []))
        if not check("exclude", f"exclude[{i}]", n < count, expected_below=count, found=n):
            reasons.append(f"expected {cls}<{count}, found {n}")

    passed = sum(c["ok"] for c in checks)
    details = {
        "checks": checks,
        "detections": [d.to_dict() for d in detections],
        "counted": len(counted),
        "classes": {cls: len(dets) for cls, dets in sorted(by_class.items())},  # counted, per class
    }
    return Judgement(
        correct=passed == len(checks), reason="\n".join(reasons), score=passed / len(checks), details=details
    )


def judge(image: Any, metadata: dict, config: JudgeConfig | None = None) -> Judgement:
    """Score one image (PIL image, HxWx3 uint8 array or file path) against one GenEval line."""
    config = config or JudgeConfig()
    validate_metadata(metadata)  # before detection, so bad prompts fail fast and clearly
    return evaluate_detections(detect(image, config.detector), metadata, config)


def judge_batch(images: Sequence[Any], metadatas: Sequence[dict], config: JudgeConfig | None = None) -> list[Judgement]:
    """`judge` over parallel lists (the GRPO reward's entry point)."""
    if len(images) != len(metadatas):
        raise ValueError(f"judge_batch got {len(images)} images but {len(metadatas)} metadata lines")
    config = config or JudgeConfig()
    for metadata in metadatas:
        validate_metadata(metadata)
    return [judge(image, metadata, config) for image, metadata in zip(images, metadatas)]
