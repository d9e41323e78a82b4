"""ShapesWorld: the project's own small world of coloured shapes, with exact ground truth.

What it is: a fixed vocabulary (six classes, GenEval's ten colours, counts 1-4, four relations),
one geometric definition of every shape (`shape_mask`), a scene type, a sampler that builds a
scene satisfying any GenEval metadata line (`scene_from_metadata`) or a random training scene
(`sample_scene`), and a fast anti-aliased renderer that works at any resolution.

What it is not: captions (`simplear.data.captions`), dataset files (`shapes_dataset`) or the
judge (`simplear.eval`). The judge relies on three promises made here, each a named constant:
the palette (`COLORS`), the background's limits (`BACKGROUND_*`) and the shape geometry.

Scenes are resolution-free: centres and sizes are fractions of the image side, so one scene
renders at 64, 128 or 1024 px. Every object's shape touches all four sides of its square box,
so a detected bounding box is the object's box (what GenEval's position rule measures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------------
# Vocabulary: other parts and hidden tests rely on these exact words.

CLASSES = ("circle", "square", "triangle", "star", "heart", "cross")
PLURALS = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "heart": "hearts",
    "cross": "crosses",
}
# GenEval's ten colour names. RGB values were chosen to be far apart (every pair >= 94 in RGB
# distance; brown/orange/red/pink/purple >= 110 apart except orange-yellow at 94) so that
# classifying a pixel to its nearest palette colour survives mild blur, noise and JPEG.
COLORS = {
    "red": (220, 30, 40),
    "orange": (250, 140, 0),
    "yellow": (245, 225, 40),
    "green": (30, 160, 50),
    "blue": (35, 75, 225),
    "purple": (130, 40, 195),
    "pink": (250, 120, 200),
    "brown": (110, 60, 20),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
}
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
RELATIONS = ("left of", "right of", "above", "below")
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

# Background limits, a promise to the judge: every background pixel has a mean level
# (R+G+B)/3 inside BACKGROUND_LEVEL_RANGE and a chroma max(R,G,B)-min(R,G,B) of at most
# BACKGROUND_MAX_CHROMA. That region is >= 70 RGB units from every palette colour (nearest:
# brown), and far from black and white, so a background can never pass for an object colour.
BACKGROUND_LEVEL_RANGE = (95.0, 170.0)
BACKGROUND_MAX_CHROMA = 30.0
# Luminance texture and grain together move a pixel's level by at most this much; base colours
# are drawn inside the level range shrunk by it, so the limits above hold by construction.
BACKGROUND_MAX_NOISE = 12.0

BACKGROUND_STYLES = ("textured", "flat", "plain")
# How training captions order a scene's clauses: "given" (the sampled metadata's order, with one
# short variant reversed) or "raster" (the order a raster scan meets the objects; captions.py).
CAPTION_ORDERS = ("given", "raster")
PLAIN_BACKGROUND = (128.0, 128.0, 128.0)  # mid grey: level 128, chroma 0

# Geometry limits (fractions of the image side). MIN_OBJECT_SIZE keeps objects >= 10 px at 64 px.
MIN_OBJECT_SIZE = 10.0 / 64.0
# GenEval's position rule (see ../shared/benchmarks/README.md): centre offsets shrink by this
# factor times the sum of the two box sizes on each axis.
GENEVAL_POSITION_THRESHOLD = 0.1


def _check_class(cls: str, field_name: str = "class") -> str:
    if cls not in CLASSES:
        raise ValueError(f"{field_name}: unknown class {cls!r}; allowed: {', '.join(CLASSES)}")
    return cls


def _check_color(color: str, field_name: str = "color") -> str:
    if color not in COLORS:
        raise ValueError(f"{field_name}: unknown color {color!r}; allowed: {', '.join(COLORS)}")
    return color


def article(word: str) -> str:
    """'a' or 'an' for the word that follows ('an orange', 'a heart')."""
    return "an" if word[:1].lower() in "aeiou" else "a"


# ---------------------------------------------------------------------------------------------
# Geometry: each shape is a polygon in the unit box [0, 1]^2 (x right, y down) whose bounding
# box is exactly the unit box. `shape_mask` rasterises it with exact horizontal coverage and
# 8 sub-rows per pixel, which is the renderer's anti-aliasing.


def _normalise(points: np.ndarray) -> np.ndarray:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return (points - lo) / (hi - lo)


def _polygon(cls: str) -> np.ndarray:
    if cls == "circle":
        t = np.linspace(0.0, 2.0 * math.pi, 256, endpoint=False)
        return _normalise(np.stack([np.cos(t), np.sin(t)], axis=1))
    if cls == "square":
        return np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    if cls == "triangle":
        return np.array([[0.5, 0], [1, 1], [0, 1]], dtype=np.float64)
    if cls == "star":
        # Five points, inner radius 0.45 of the outer: pointy enough never to look like a circle.
        k = np.arange(10)
        r = np.where(k % 2 == 0, 1.0, 0.45)
        t = -math.pi / 2 + k * math.pi / 5
        return _normalise(np.stack([r * np.cos(t), r * np.sin(t)], axis=1))
    if cls == "heart":
        t = np.linspace(0.0, 2.0 * math.pi, 256, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return _normalise(np.stack([x, -y], axis=1))  # flip: the curve's y points up
    if cls == "cross":
        # A plus sign with arms 0.36 of the box wide: its corners are empty, unlike a square.
        a, b = 0.32, 0.68
        pts = [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]
        return np.array(pts, dtype=np.float64)
    raise ValueError(f"unknown class {cls!r}; allowed: {', '.join(CLASSES)}")


def shape_polygon(cls: str) -> np.ndarray:
    """The outline of `cls` as an (N, 2) array in the unit box (x right, y down)."""
    return _polygon(_check_class(cls)).copy()


def _polygon_coverage(poly: np.ndarray, size: int, subrows: int = 8) -> np.ndarray:
    """Fraction of each pixel of a size x size grid covered by `poly` (unit box scaled to size)."""
    p0 = poly * size
    p1 = np.roll(p0, -1, axis=0)
    ys = (np.arange(size * subrows) + 0.5) / subrows  # sub-row centres, pixel units
    y = ys[:, None]
    y0, y1 = p0[None, :, 1], p1[None, :, 1]
    crosses = ((y0 <= y) & (y < y1)) | ((y1 <= y) & (y < y0))  # half-open: counts stay even
    dy = np.where(y1 == y0, 1.0, y1 - y0)
    xs = p0[None, :, 0] + (y - y0) * (p1[None, :, 0] - p0[None, :, 0]) / dy
    xs = np.where(crosses, xs, np.inf)
    xs.sort(axis=1)
    width = int(crosses.sum(axis=1).max()) if crosses.any() else 0
    width += width % 2
    xs = np.clip(xs[:, :width], 0.0, float(size))  # padding (inf) becomes an empty interval
    a, b = xs[:, 0::2, None], xs[:, 1::2, None]
    cols = np.arange(size, dtype=np.float64)[None, None, :]
    cover = np.clip(np.minimum(b, cols + 1) - np.maximum(a, cols), 0.0, 1.0).sum(axis=1)
    return cover.reshape(size, subrows, size).mean(axis=1)


@lru_cache(maxsize=4096)
def _cached_mask(cls: str, size: int) -> np.ndarray:
    mask = np.clip(_polygon_coverage(_polygon(cls), size), 0.0, 1.0).astype(np.float32)
    mask.flags.writeable = False  # shared by every caller through the cache
    return mask


def shape_mask(cls: str, size: int) -> np.ndarray:
    """Coverage in [0, 1] (float32, size x size) of one `cls` filling a size x size box.

    The one definition of each shape's geometry: the renderer paints with it and the judge
    builds its templates from it. The result is cached and read-only; copy it to modify.
    """
    _check_class(cls)
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer number of pixels, got {size!r}")
    return _cached_mask(cls, int(size))


# ---------------------------------------------------------------------------------------------
# Scenes.


@dataclass(frozen=True)
class SceneObject:
    """One shape: centre (cx, cy) and box side `size` as fractions of the image side.

    `clause` is the index of the metadata `include` clause the object satisfies.
    """

    cls: str
    color: str
    cx: float
    cy: float
    size: float
    clause: int = 0

    def box(self, resolution: int | None = None) -> tuple:
        """(x0, y0, x1, y1): fractions when `resolution` is None, else the exact pixel box drawn."""
        if resolution is None:
            h = self.size / 2
            return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)
        s = pixel_size(self.size, resolution)
        x0 = int(round(self.cx * resolution - s / 2))
        y0 = int(round(self.cy * resolution - s / 2))
        return (x0, y0, x0 + s, y0 + s)


@dataclass(frozen=True)
class Background:
    """A soft background: a two-colour linear gradient plus low-frequency texture and grain.

    Colours are low-saturation mid-tones inside the BACKGROUND_* limits; `seed` fixes the noise.
    """

    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    angle: float = 0.0  # gradient direction, radians
    texture_cells: int = 4  # the texture is a random cells x cells grid, smoothly upsampled
    texture_amp: float = 6.0  # luminance amplitude of the texture
    grain: float = 2.0  # std of per-pixel luminance grain
    seed: int = 0


@dataclass(frozen=True)
class Scene:
    """Objects on a background, plus the GenEval metadata (tag, include, exclude) it satisfies."""

    objects: tuple[SceneObject, ...]
    background: Background
    metadata: dict = field(default_factory=dict, compare=True, hash=False)

    @property
    def tag(self) -> str | None:
        return self.metadata.get("tag")


def pixel_size(size: float, resolution: int) -> int:
    return max(1, int(round(size * resolution)))


def geneval_offset(box_a, box_b) -> tuple[float, float]:
    """GenEval's normalised position offset of box A relative to box B: (dx, dy).

    Centre offset shrunk by 0.1 x (sum of the two sizes) per axis, divided by the length of the
    unshrunk offset. "left of" means dx < -0.5, "right of" dx > 0.5, "above" dy < -0.5,
    "below" dy > 0.5 (y grows downwards).
    """
    ca = np.array([(box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2])
    cb = np.array([(box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2])
    da = np.array([box_a[2] - box_a[0], box_a[3] - box_a[1]])
    db = np.array([box_b[2] - box_b[0], box_b[3] - box_b[1]])
    offset = ca - cb
    norm = float(np.linalg.norm(offset))
    if norm == 0.0:
        return 0.0, 0.0
    revised = np.maximum(np.abs(offset) - GENEVAL_POSITION_THRESHOLD * (da + db), 0) * np.sign(offset)
    return float(revised[0] / norm), float(revised[1] / norm)


def relation_holds(box_a, box_b, relation: str, margin: float = 0.0) -> bool:
    """True when A is `relation` B under GenEval's rule, with `margin` beyond its 0.5 threshold."""
    dx, dy = geneval_offset(box_a, box_b)
    need = 0.5 + margin
    if relation == "left of":
        return dx < -need
    if relation == "right of":
        return dx > need
    if relation == "above":
        return dy < -need
    if relation == "below":
        return dy > need
    raise ValueError(f"unknown relation {relation!r}; allowed: {', '.join(RELATIONS)}")


# ---------------------------------------------------------------------------------------------
# Rendering.


def _background_array(bg: Background, resolution: int) -> np.ndarray:
    """H x W x 3 float32 background; luminance noise is clipped so the limits always hold."""
    r = resolution
    coords = (np.arange(r, dtype=np.float32) + 0.5) / r - 0.5
    c, s = np.float32(math.cos(bg.angle)), np.float32(math.sin(bg.angle))
    t = np.clip(coords[None, :] * c + coords[:, None] * s + np.float32(0.5), 0.0, 1.0)
    rng = np.random.default_rng(bg.seed)
    cells = rng.uniform(-1.0, 1.0, size=(bg.texture_cells, bg.texture_cells)).astype(np.float32)
    texture = np.asarray(Image.fromarray(cells).resize((r, r), Image.BICUBIC))
    noise = rng.standard_normal(size=(r, r), dtype=np.float32)
    noise *= np.float32(bg.grain)
    noise += np.float32(bg.texture_amp) * texture
    np.clip(noise, -BACKGROUND_MAX_NOISE, BACKGROUND_MAX_NOISE, out=noise)
    # Channel by channel, in place: about twice as fast as broadcasting over an H x W x 3 array.
    out = np.empty((r, r, 3), dtype=np.float32)
    for ch in range(3):
        a, b = bg.color_a[ch], bg.color_b[ch]
        np.multiply(t, np.float32(b - a), out=out[..., ch])
        out[..., ch] += noise + np.float32(a)
    return out


def render_array(scene: Scene, resolution: int) -> np.ndarray:
    """The scene as an H x W x 3 uint8 array (what `render_scene` wraps in a PIL image)."""
    if not isinstance(resolution, (int, np.integer)) or resolution < 16:
        raise ValueError(f"resolution must be an integer >= 16, got {resolution!r}")
    resolution = int(resolution)
    canvas = _background_array(scene.background, resolution)
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box(resolution)
        mask = shape_mask(obj.cls, x1 - x0)
        # Clip to the canvas (sampled scenes stay inside; hand-made ones may not).
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, resolution), min(y1, resolution)
        if cx0 >= cx1 or cy0 >= cy1:
            continue
        m = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0, None]
        region = canvas[cy0:cy1, cx0:cx1]
        color = np.asarray(COLORS[_check_color(obj.color)], dtype=np.float32)
        canvas[cy0:cy1, cx0:cx1] = region + (color - region) * m
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def render_scene(scene: Scene, resolution: int) -> Image.Image:
    """Render `scene` as an RGB PIL image of resolution x resolution pixels."""
    return Image.fromarray(render_array(scene, resolution), mode="RGB")


# ---------------------------------------------------------------------------------------------
# Sampling: GenEval metadata -> a scene that satisfies it, and random training scenes.

# Held out of training by default: each colour and each class still appears in training, only
# these combinations do not, so the suite can measure compositional generalisation.
DEFAULT_HELDOUT = (
    ("blue", "star"),
    ("red", "heart"),
    ("green", "cross"),
    ("yellow", "triangle"),
    ("purple", "circle"),
    ("orange", "square"),
)
# GenEval's tag proportions (80/99/80/94/100/100 prompts out of 553).
GENEVAL_TAG_WEIGHTS = (
    ("single_object", 80),
    ("two_object", 99),
    ("counting", 80),
    ("colors", 94),
    ("position", 100),
    ("color_attr", 100),
)
MAX_OBJECTS = 8


def parse_tag_weights(text: str, base: dict[str, float]) -> dict[str, float]:
    """`TAG=W[,TAG=W...]` applied over `base` ({tag: weight}): the full mix, tags not named keep
    their weight in `base`. Raises ValueError, naming the item, on an unknown tag, a weight that is
    not a finite number >= 0, or a mix whose weights are all 0."""
    import math

    mix = dict(base)
    for item in text.split(","):
        tag, sep, value = item.partition("=")
        tag = tag.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or tag not in TAGS or not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"expected TAG=WEIGHT[,TAG=WEIGHT...] with TAG one of {', '.join(TAGS)} and WEIGHT >= 0, got {item!r}")
        mix[tag] = weight
    if sum(mix.values()) <= 0:
        raise ValueError("the tag weights must not all be 0")
    return mix


@dataclass(frozen=True)
class ShapesConfig:
    """How scenes are sampled. Sizes, gaps and margins are fractions of the image side."""

    heldout: tuple[tuple[str, str], ...] = DEFAULT_HELDOUT  # (colour, class) never sampled
    tag_weights: tuple[tuple[str, float], ...] = GENEVAL_TAG_WEIGHTS
    counts: tuple[int, ...] = (2, 3, 4)  # counts used by sampled counting scenes
    min_size: float = 0.17
    max_size: float = 0.32
    gap: float = 0.04  # empty space between two boxes, so objects stay countable
    margin: float = 0.03  # empty space between a box and the image border
    position_margin: float = 0.25  # demanded beyond GenEval's 0.5 normalised-offset threshold
    same_color_prob: float = 0.5  # uncoloured multi-object clauses share one colour this often
    # "textured": a gradient with texture and grain (the suite's ground truth); "flat": one
    # random tone per image; "plain": the same mid grey in every image. Flat and plain scenes
    # spend no model capacity on background noise; all stay inside the BACKGROUND_* limits the
    # judge relies on.
    background: str = "textured"
    # 0: boxes anywhere. N > 0: every box's sides and position are whole cells of an N x N grid
    # (at 128 px with an 8x tokenizer, grid 16 puts every box edge on a token boundary, so a
    # shape of one class, size and colour is always the same token pattern).
    grid: int = 0
    # "given": captions name a scene's clauses in the sampled order, and one short variant reverses
    # them, so word order carries no meaning. "raster": every caption of a scene without relations
    # names its clauses in the order a raster scan meets their objects (top to bottom, then left to
    # right), so "a star and a heart" also says which one the image tokens draw first.
    caption_order: str = "given"

    def __post_init__(self):
        heldout = tuple((str(c), str(k)) for c, k in self.heldout)
        for color, cls in heldout:
            _check_color(color, "heldout colour")
            _check_class(cls, "heldout class")
        object.__setattr__(self, "heldout", heldout)
        weights = tuple(dict(self.tag_weights).items())
        for tag, w in weights:
            if tag not in TAGS:
                raise ValueError(f"unknown tag {tag!r} in tag_weights; allowed: {', '.join(TAGS)}")
            if w < 0:
                raise ValueError(f"tag weight for {tag!r} must be >= 0, got {w}")
        if not weights or sum(w for _, w in weights) <= 0:
            raise ValueError("tag_weights must give at least one tag a positive weight")
        object.__setattr__(self, "tag_weights", weights)
        if not all(isinstance(c, int) and 1 <= c <= max(COUNT_WORDS) for c in self.counts):
            raise ValueError(f"counts must be integers in 1..{max(COUNT_WORDS)}, got {self.counts}")
        if not MIN_OBJECT_SIZE <= self.min_size <= self.max_size <= 0.6:
            raise ValueError(
                f"need {MIN_OBJECT_SIZE:.4f} <= min_size <= max_size <= 0.6, "
                f"got {self.min_size}, {self.max_size}"
            )

        if not isinstance(self.grid, int) or not (self.grid == 0 or 4 <= self.grid <= 256):
            raise ValueError(f"grid must be 0 (off) or an integer in 4..256, got {self.grid!r}")
        if self.grid and math.ceil(self.min_size * self.grid - 1e-9) > math.floor(self.max_size * self.grid + 1e-9):
            raise ValueError(f"grid {self.grid} has no whole cell count between min_size {self.min_size} "
                             f"and max_size {self.max_size}; use a finer grid or a wider size range")
        if self.caption_order not in CAPTION_ORDERS:
            raise ValueError(f"caption_order must be one of {', '.join(CAPTION_ORDERS)}, got {self.caption_order!r}")
        if self.background not in BACKGROUND_STYLES:
            raise ValueError(f"background must be one of {', '.join(BACKGROUND_STYLES)}, got {self.background!r}")

    def colors_for(self, cls: str) -> tuple[str, ...]:
        """The colours `cls` may take in sampled (training) scenes."""
        return tuple(c for c in COLORS if (c, cls) not in self.heldout)

    def is_heldout(self, color: str | None, cls: str) -> bool:
        return color is not None and (color, cls) in self.heldout


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy Generator or an integer seed, got {type(rng).__name__}")


def validate_metadata(metadata: dict, *, max_objects: int | None = MAX_OBJECTS) -> dict:
    """Check one GenEval line against ShapesWorld's vocabulary; return a clean copy.

    `max_objects` is what a ShapesWorld scene can hold (for rendering); the judge passes None,
    since any number of objects can be scored.

    Errors name the offending field and the allowed values, e.g.
    `include[1].color: unknown color 'teal'; allowed: red, orange, ...`.
    """
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    tag = metadata.get("tag")
    if tag is not None and tag not in TAGS:
        raise ValueError(f"tag: unknown tag {tag!r}; allowed: {', '.join(TAGS)}")
    include = metadata.get("include")
    if not isinstance(include, list) or not include:
        raise ValueError("include: must be a non-empty list of {class, count[, color][, position]}")
    clean = []
    for i, clause in enumerate(include):
        where = f"include[{i}]"
        if not isinstance(clause, dict):
            raise ValueError(f"{where}: must be an object, got {clause!r}")
        out = {"class": _check_class(clause.get("class"), f"{where}.class"), "count": clause.get("count", 1)}
        if not isinstance(out["count"], int) or isinstance(out["count"], bool) or out["count"] < 1:
            raise ValueError(f"{where}.count: must be a positive integer, got {out['count']!r}")
        if clause.get("color") is not None:
            out["color"] = _check_color(clause["color"], f"{where}.color")
        if clause.get("position") is not None:
            pos = clause["position"]
            if not (isinstance(pos, (list, tuple)) and len(pos) == 2):
                raise ValueError(f"{where}.position: must be [relation, index], got {pos!r}")
            rel, ref = pos
            if rel not in RELATIONS:
                raise ValueError(
                    f"{where}.position: unknown relation {rel!r}; allowed: {', '.join(RELATIONS)}"
                )
            if isinstance(ref, bool) or not isinstance(ref, int) or not 0 <= ref < i:
                raise ValueError(f"{where}.position: index must name an earlier include clause, got {ref!r}")
            out["position"] = [rel, ref]
        clean.append(out)
    total = sum(c["count"] for c in clean)
    if max_objects is not None and total > max_objects:
        raise ValueError(f"include: {total} objects requested; ShapesWorld places at most {max_objects}")
    result = {"tag": tag, "include": clean} if tag is not None else {"include": clean}
    if metadata.get("exclude") is not None:
        exclude = metadata["exclude"]
        if not isinstance(exclude, list):
            raise ValueError("exclude: must be a list of {class, count}")
        result["exclude"] = []
        for i, clause in enumerate(exclude):
            where = f"exclude[{i}]"
            if not isinstance(clause, dict):
                raise ValueError(f"{where}: must be an object, got {clause!r}")
            cls = _check_class(clause.get("class"), f"{where}.class")
            count = clause.get("count")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ValueError(f"{where}.count: must be a positive integer, got {count!r}")
            have = sum(c["count"] for c in clean if c["class"] == cls)
            if have >= count:
                raise ValueError(f"{where}: excludes {count} {cls} but include asks for {have}")
            result["exclude"].append({"class": cls, "count": count})
    if "prompt" in metadata:
        result["prompt"] = metadata["prompt"]
    return result


def sample_background(rng, style: str = "textured") -> Background:
    """A random background inside the BACKGROUND_* limits (by construction, see the constants).

    `style` "textured": a gradient with texture and grain; "flat": one random tone, no noise;
    "plain": PLAIN_BACKGROUND (draws nothing from `rng`).
    """
    if style not in BACKGROUND_STYLES:
        raise ValueError(f"background style must be one of {', '.join(BACKGROUND_STYLES)}, got {style!r}")
    if style == "plain":
        return Background(color_a=PLAIN_BACKGROUND, color_b=PLAIN_BACKGROUND, texture_amp=0.0, grain=0.0)
    rng = _as_rng(rng)
    lo = BACKGROUND_LEVEL_RANGE[0] + BACKGROUND_MAX_NOISE
    hi = BACKGROUND_LEVEL_RANGE[1] - BACKGROUND_MAX_NOISE

    def tone(level: float, hue: float) -> tuple[float, float, float]:
        # A tint whose channels sum to zero keeps the mean level; scaled to a chroma <= the limit.
        v = np.cos(hue - np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]))
        v *= rng.uniform(0.0, BACKGROUND_MAX_CHROMA) / (v.max() - v.min())
        return tuple(float(x) for x in level + v)

    hue = rng.uniform(0, 2 * math.pi)
    level = rng.uniform(lo, hi)
    color_a = tone(level, hue)
    if style == "flat":
        return Background(color_a=color_a, color_b=color_a, texture_amp=0.0, grain=0.0)
    # Half the time a two-hue gradient, otherwise a gentle one in one hue.
    hue_b = rng.uniform(0, 2 * math.pi) if rng.random() < 0.5 else hue
    color_b = tone(float(np.clip(level + rng.uniform(-40, 40), lo, hi)), hue_b)
    return Background(
        color_a=color_a,
        color_b=color_b,
        angle=float(rng.uniform(0, 2 * math.pi)),
        texture_cells=int(rng.integers(2, 7)),
        texture_amp=float(rng.uniform(0.0, 8.0)),
        grain=float(rng.uniform(0.0, 3.0)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def sample_metadata(rng, config: ShapesConfig = ShapesConfig(), tag: str | None = None) -> dict:
    """A random GenEval line (`tag`, `include`, `exclude` for counting; no prompt) for training.

    Classes within a prompt are distinct and colours in color_attr differ, as in GenEval;
    held-out (colour, class) pairs are never chosen.
    """
    rng = _as_rng(rng)
    if tag is None:
        tags = [t for t, _ in config.tag_weights]
        weights = np.array([w for _, w in config.tag_weights], dtype=np.float64)
        tag = tags[int(rng.choice(len(tags), p=weights / weights.sum()))]
    elif tag not in TAGS:
        raise ValueError(f"unknown tag {tag!r}; allowed: {', '.join(TAGS)}")
    two = [CLASSES[i] for i in rng.permutation(len(CLASSES))[:2]]
    if tag == "single_object":
        return {"tag": tag, "include": [{"class": two[0], "count": 1}]}
    if tag == "two_object":
        return {"tag": tag, "include": [{"class": two[0], "count": 1}, {"class": two[1], "count": 1}]}
    if tag == "counting":
        count = int(_pick(rng, config.counts))
        return {
            "tag": tag,
            "include": [{"class": two[0], "count": count}],
            "exclude": [{"class": two[0], "count": count + 1}],
        }
    if tag == "colors":
        return {
            "tag": tag,
            "include": [{"class": two[0], "count": 1, "color": _pick(rng, config.colors_for(two[0]))}],
        }
    if tag == "position":
        rel = _pick(rng, RELATIONS)
        # GenEval's form: the reference object is include[0]; the named (placed) object is
        # include[1] and carries ["relation", 0]. Its prompt names the placed object first.
        return {
            "tag": tag,
            "include": [{"class": two[0], "count": 1}, {"class": two[1], "count": 1, "position": [rel, 0]}],
        }
    first = _pick(rng, config.colors_for(two[0]))
    second = _pick(rng, [c for c in config.colors_for(two[1]) if c != first])
    return {
        "tag": tag,
        "include": [
            {"class": two[0], "count": 1, "color": first},
            {"class": two[1], "count": 1, "color": second},
        ],
    }


def _axis_range(lo: float, hi: float, side: str | None) -> tuple[float, float]:
    """Bias a centre coordinate towards one half, so relation constraints are rarely rejected."""
    if side == "low":
        return lo, max(lo, 0.5)
    if side == "high":
        return min(hi, 0.5), hi
    return lo, hi


def _snap_size(size: float, config: ShapesConfig) -> float:
    """`size` rounded to whole grid cells, kept inside [min_size, max_size]."""
    n = config.grid
    lo = math.ceil(config.min_size * n - 1e-9)
    hi = max(lo, math.floor(config.max_size * n + 1e-9))
    return min(max(round(size * n), lo), hi) / n


def _snap_centre(centre: float, size: float, config: ShapesConfig) -> float:
    """The centre whose box (side `size`, whole cells) starts on the grid line nearest to the
    box `centre` asks for, kept at least `margin` (rounded up to whole cells) from the border."""
    n = config.grid
    cells = round(size * n)
    edge = math.ceil(config.margin * n - 1e-9)
    start = min(max(round((centre - size / 2) * n), edge), max(edge, n - edge - cells))
    return (start + cells / 2) / n


def _place(specs, constraints, rng, config: ShapesConfig) -> list[SceneObject]:
    """Rejection-sample non-overlapping boxes that satisfy every relation with margin."""
    n = len(specs)
    biases: list[dict] = [{} for _ in range(n)]  # object -> {axis: "low"|"high"}
    for a, b, rel in constraints:
        axis = "x" if rel in ("left of", "right of") else "y"
        low_first = rel in ("left of", "above")
        for idx, side in ((a, "low" if low_first else "high"), (b, "high" if low_first else "low")):
            biases[idx][axis] = None if biases[idx].get(axis, side) != side else side
    max_size = min(config.max_size, max(config.min_size, 0.75 / math.sqrt(n)))
    for attempt in range(600):
        shrink = 0.94 ** (attempt // 60)  # crowded scenes: smaller boxes after repeated failures
        top = max(config.min_size, max_size * shrink)
        boxes: list[tuple[float, float, float]] = []
        for i in range(n):
            s = float(rng.uniform(config.min_size, top))
            if config.grid:
                s = _snap_size(s, config)
            lo, hi = config.margin + s / 2, 1 - config.margin - s / 2
            xr = _axis_range(lo, hi, biases[i].get("x"))
            yr = _axis_range(lo, hi, biases[i].get("y"))
            for _ in range(40):
                cx, cy = float(rng.uniform(*xr)), float(rng.uniform(*yr))
                if config.grid:
                    cx, cy = _snap_centre(cx, s, config), _snap_centre(cy, s, config)
                if all(
                    max(abs(cx - ox), abs(cy - oy)) - (s + os_) / 2 >= config.gap for ox, oy, os_ in boxes
                ):
                    boxes.append((cx, cy, s))
                    break
            else:
                break
        if len(boxes) < n:
            continue
        objs = [
            SceneObject(cls, color, cx, cy, s, clause)
            for (cls, color, clause), (cx, cy, s) in zip(specs, boxes)
        ]
        if all(
            relation_holds(objs[a].box(), objs[b].box(), rel, config.position_margin)
            for a, b, rel in constraints
        ):
            return objs
    raise ValueError(f"could not place {n} objects with the requested relations; ask for fewer objects")


def scene_from_metadata(metadata: dict, rng, config: ShapesConfig = ShapesConfig()) -> Scene:
    """A scene satisfying one GenEval line: exactly the included objects, nothing else.

    Counts are exact (so every exclude clause holds), colours are as asked (uncoloured objects
    get a random non-held-out colour), and every `position` holds under GenEval's rule with
    `config.position_margin` to spare. An explicitly requested held-out pair is rendered.
    """
    meta = validate_metadata(metadata)
    rng = _as_rng(rng)
    specs: list[tuple[str, str, int]] = []
    first_of: list[list[int]] = []
    for i, clause in enumerate(meta["include"]):
        cls, count = clause["class"], clause["count"]
        shared = clause.get("color")
        if shared is None and count > 1 and rng.random() < config.same_color_prob:
            shared = _pick(rng, config.colors_for(cls) or tuple(COLORS))
        first_of.append([])
        for _ in range(count):
            color = shared if shared is not None else _pick(rng, config.colors_for(cls) or tuple(COLORS))
            first_of[-1].append(len(specs))
            specs.append((cls, color, i))
    constraints = [
        (a, b, clause["position"][0])
        for i, clause in enumerate(meta["include"])
        if "position" in clause
        for a in first_of[i]
        for b in first_of[clause["position"][1]]
    ]
    objects = _place(specs, constraints, rng, config)
    return Scene(objects=tuple(objects), background=sample_background(rng, config.background),
                 metadata=meta)


def sample_scene(rng, config: ShapesConfig = ShapesConfig(), tag: str | None = None) -> Scene:
    """A random training scene: `sample_metadata` then `scene_from_metadata`."""
    rng = _as_rng(rng)
    return scene_from_metadata(sample_metadata(rng, config, tag), rng, config)


__all__ = [
    "BACKGROUND_LEVEL_RANGE",
    "BACKGROUND_MAX_CHROMA",
    "BACKGROUND_MAX_NOISE",
    "BACKGROUND_STYLES",
    "CAPTION_ORDERS",
    "PLAIN_BACKGROUND",
    "CLASSES",
    "COLORS",
    "COUNT_WORDS",
    "PLURALS",
    "RELATIONS",
    "TAGS",
    "Background",
    "Scene",
    "SceneObject",
    "DEFAULT_HELDOUT",
    "GENEVAL_TAG_WEIGHTS",
    "MAX_OBJECTS",
    "ShapesConfig",
    "article",
    "geneval_offset",
    "relation_holds",
    "render_array",
    "render_scene",
    "sample_background",
    "sample_metadata",
    "sample_scene",
    "scene_from_metadata",
    "shape_mask",
    "shape_polygon",
    "validate_metadata",
]
