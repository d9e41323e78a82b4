"""Captions and GenEval metadata for ShapesWorld scenes.

Every scene gets (1) GenEval's canonical phrasing of its metadata (`a photo of two stars`,
`a photo of a cross left of a square`), (2) a long caption that names every object with its
colour and where it is, and (3) short natural variants from several templates (`two red
circles`, `a red circle to the left of a blue square`, `there are three green hearts`).
Captions only ever state what the scene's ground truth makes true.

What it is not: the scene sampler or renderer (`simplear.data.shapes`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from simplear.data.shapes import (
    CAPTION_ORDERS,
    COLORS,
    COUNT_WORDS,
    PLURALS,
    Scene,
    article,
    validate_metadata,
)

# Counts past GenEval's four only occur in hand-written metadata; spell them too.
_NUMBER_WORDS = {**COUNT_WORDS, 5: "five", 6: "six", 7: "seven", 8: "eight"}
# How each relation reads in natural variants ("a cross to the left of a square").
_NATURAL_RELATION = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
_PREFIXES = ("", "a photo of ", "an image of ", "a picture of ", "a rendering of ")


def number_word(count: int) -> str:
    if count not in _NUMBER_WORDS:
        raise ValueError(f"count must be in 1..{max(_NUMBER_WORDS)}, got {count}")
    return _NUMBER_WORDS[count]


def noun_phrase(cls: str, count: int = 1, color: str | None = None) -> str:
    """`a red circle`, `an orange star`, `a heart`, `two stars`, `three green hearts`."""
    words = f"{color} " if color else ""
    if count == 1:
        head = f"{words}{cls}"
        return f"{article(head)} {head}"
    return f"{number_word(count)} {words}{PLURALS[cls]}"


def canonical_prompt(metadata: dict) -> str:
    """GenEval's phrasing of one metadata line (its `prompt` field), for any ShapesWorld line.

    Position lines name the placed object (the clause carrying `position`) first and its
    reference second: `a photo of a cross left of a square`.
    """
    meta = validate_metadata(metadata)
    include = meta["include"]
    phrases = [noun_phrase(c["class"], c["count"], c.get("color")) for c in include]
    placed = [i for i, c in enumerate(include) if "position" in c]
    if placed:
        parts, used = [], set()
        for i in placed:
            rel, ref = include[i]["position"]
            parts.append(f"{phrases[i]} {rel} {phrases[ref]}")
            used.update((i, ref))
        parts += [phrases[i] for i in range(len(include)) if i not in used]
        return "a photo of " + " and ".join(parts)
    return "a photo of " + " and ".join(phrases)


def scene_metadata(scene: Scene) -> dict:
    """The scene's ground truth as one GenEval line: `tag`, `include`, `exclude`?, `prompt`."""
    meta = validate_metadata(scene.metadata)
    out = {"tag": meta.get("tag"), "include": meta["include"]}
    if out["tag"] is None:
        del out["tag"]
    if "exclude" in meta:
        out["exclude"] = meta["exclude"]
    out["prompt"] = canonical_prompt(meta)
    return out


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _clause_phrase(scene: Scene, clause: int, with_color: bool) -> str:
    """A clause's objects in words, with their true colours when `with_color`."""
    objs = [o for o in scene.objects if o.clause == clause]
    cls = objs[0].cls
    colors = [o.color for o in objs]
    if not with_color:
        return noun_phrase(cls, len(objs))
    if len(set(colors)) == 1:
        return noun_phrase(cls, len(objs), colors[0])
    ordered = [c for c in COLORS if c in colors]  # palette order: stable and readable
    return f"{noun_phrase(cls, len(objs))} in {_join(ordered)}"


def _where(cx: float, cy: float) -> str:
    """Coarse location in thirds of the image: `in the top left`, `in the centre`."""
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    if row and col:
        return f"in the {row} {col}"
    if row or col:
        return f"at the {row or col}"
    return "in the centre"


def _background_words(scene: Scene) -> str:
    a = np.asarray(scene.background.color_a)
    b = np.asarray(scene.background.color_b)
    level = float((a.mean() + b.mean()) / 2)
    tone = "dark" if level < 118 else "light" if level > 148 else "mid"
    if np.abs(a - b).max() > 20:
        kind = "gradient"
    elif scene.background.texture_amp == 0 and scene.background.grain == 0 and np.array_equal(a, b):
        kind = "plain"  # the flat and plain styles: one tone, no texture
    else:
        kind = "textured"
    return f"a muted {tone}-grey {kind} background"


def long_caption(scene: Scene) -> str:
    """Every object with its colour, the relations the metadata names, and where objects lie."""
    include = scene.metadata["include"]
    placed = {i for i, c in enumerate(include) if "position" in c}
    refs = {c["position"][1] for c in include if "position" in c}
    parts = []
    for i, clause in enumerate(include):
        if i in placed:
            rel, ref = clause["position"]
            parts.append(
                f"{_clause_phrase(scene, i, True)} {_NATURAL_RELATION[rel]} {_clause_phrase(scene, ref, True)}"
            )
        elif i not in refs:
            objs = [o for o in scene.objects if o.clause == i]
            where = _where(objs[0].cx, objs[0].cy) if len(objs) == 1 else "spread across the image"
            parts.append(f"{_clause_phrase(scene, i, True)} {where}")
    return f"a picture of {_join(parts)}, on {_background_words(scene)}"


def raster_ordered(scene: Scene) -> Scene:
    """The scene with its clauses renumbered in the order a raster scan meets their objects.

    A clause's place is its first object's: the smallest box top edge, then the leftmost centre
    (rows top to bottom, left to right, as the image tokens are generated). The objects and the
    image are unchanged; `metadata["include"]` and each object's `clause` follow the new order.
    Scenes with fewer than two clauses or with a relation (whose clause indices the relation
    words carry) are returned as they are.
    """
    include = scene.metadata.get("include", [])
    if len(include) < 2 or any("position" in c for c in include):
        return scene

    def key(clause: int) -> tuple[float, float]:
        return min((round(o.cy - o.size / 2, 6), round(o.cx, 6)) for o in scene.objects if o.clause == clause)

    order = sorted(range(len(include)), key=key)
    if order == list(range(len(include))):
        return scene
    new_index = {old: new for new, old in enumerate(order)}
    metadata = {**scene.metadata, "include": [include[i] for i in order]}
    objects = tuple(dataclasses.replace(o, clause=new_index[o.clause]) for o in scene.objects)
    return dataclasses.replace(scene, objects=objects, metadata=metadata)


def short_variants(scene: Scene, rng: np.random.Generator, keep_order: bool = False) -> list[str]:
    """Three natural short captions from templates: with true colours, `there is/are`, plain.

    Without `keep_order` the plain variant names unrelated clauses in reverse half of the time.
    """
    include = scene.metadata["include"]
    placed = [i for i, c in enumerate(include) if "position" in c]

    def phrase(colored: bool, natural: bool) -> str:
        if placed:
            i = placed[0]
            rel, ref = include[i]["position"]
            rel = _NATURAL_RELATION[rel] if natural else rel
            return f"{_clause_phrase(scene, i, colored)} {rel} {_clause_phrase(scene, ref, colored)}"
        order = list(range(len(include)))
        if not natural and not keep_order:
            order.reverse()  # "a heart and a circle": word order carries no meaning here
        return _join([_clause_phrase(scene, i, colored) for i in order])

    plural = len(scene.objects) > 1 and len(include) == 1
    prefix = _PREFIXES[int(rng.integers(len(_PREFIXES)))]
    there = f"there {'are' if plural else 'is'} {phrase(bool(rng.random() < 0.6), True)}"
    return [prefix + phrase(True, True), there, phrase(False, bool(rng.random() < 0.5))]


def scene_captions(scene: Scene, rng: np.random.Generator | int | None = None, order: str = "given") -> list[str]:
    """`[canonical GenEval prompt, long caption, *short variants]`, deduplicated.

    `order="raster"` names the clauses of a scene without relations in raster order in every
    caption (`raster_ordered`); "given" keeps the metadata's order. Both draw the same random
    numbers, so the rest of an example seeded alike is unchanged.
    """
    if order not in CAPTION_ORDERS:
        raise ValueError(f"order must be one of {', '.join(CAPTION_ORDERS)}, got {order!r}")
    if rng is None or isinstance(rng, (int, np.integer)):
        rng = np.random.default_rng(0 if rng is None else int(rng))
    raster = order == "raster"
    if raster:
        scene = raster_ordered(scene)
    captions = [canonical_prompt(scene.metadata), long_caption(scene), *short_variants(scene, rng, keep_order=raster)]
    seen, out = set(), []
    for caption in captions:
        if caption not in seen:
            seen.add(caption)
            out.append(caption)
    return out


__all__ = [
    "canonical_prompt",
    "long_caption",
    "noun_phrase",
    "number_word",
    "raster_ordered",
    "scene_captions",
    "scene_metadata",
    "short_variants",
]
