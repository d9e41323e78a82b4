"""ShapesWorld as training data: a folder written fast on several processes, or a stream.

`write_shapes_dataset` makes the files that `simplear data shapes --out DIR` documents in
docs/design.md ("ShapesWorld dataset files"):

    DIR/captions.jsonl   one object per image: {"image": "images/000000.png", "captions": [...],
                         "metadata": {tag, include, exclude?, prompt}, "seed": int, "objects": [...]}
    DIR/images/          the PNGs
    DIR/config.json      the resolved settings that made the folder

`captions[0]` is GenEval's canonical phrasing, `captions[1]` the long caption. `seed` re-makes
the row alone: `make_example(seed, resolution, config)`. `objects` (an extra key) lists each
object's class, colour and pixel box. The folder is built under a temporary name and renamed
when complete, so a killed run never leaves a half dataset under the final name.

`ShapesStream` renders the same examples on the fly (a torch IterableDataset), for training
without files. Both are deterministic by seed: the same seed gives identical bytes.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simplear.data.captions import raster_ordered, scene_captions, scene_metadata
from simplear.data.shapes import Scene, ShapesConfig, render_scene, sample_scene
from simplear.utils import atomic_dir

FORMAT_VERSION = 1
_CHUNK = 500  # at most this many images per task handed to a worker process


def image_seed(seed: int, index: int) -> int:
    """The seed of image `index` in a run seeded `seed` (independent streams per image)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])


@dataclass(frozen=True)
class ShapesExample:
    image: Image.Image
    captions: list[str]
    metadata: dict
    scene: Scene
    seed: int


def example_scene(seed: int, config: ShapesConfig = ShapesConfig()) -> tuple[Scene, list[str]]:
    """The scene and captions of the example seeded `seed`, without rendering its image.

    With `config.caption_order == "raster"` the scene's clauses are renumbered in raster order
    (`raster_ordered`), so its metadata, `prompt` and captions all name them that way.
    """
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, config)
    if config.caption_order == "raster":
        scene = raster_ordered(scene)
    return scene, scene_captions(scene, rng, order=config.caption_order)


def make_example(seed: int, resolution: int, config: ShapesConfig = ShapesConfig()) -> ShapesExample:
    """One training example from its own seed: scene, image, captions and GenEval metadata."""
    scene, captions = example_scene(seed, config)
    return ShapesExample(render_scene(scene, resolution), captions, scene_metadata(scene), scene, seed)


def scene_objects(scene: Scene, resolution: int) -> list[dict]:
    """A row's `objects`: each shape's class, colour and exact pixel box at `resolution`."""
    return [{"class": o.cls, "color": o.color, "box": list(o.box(resolution))} for o in scene.objects]


@dataclass(frozen=True)
class ShapesDatasetConfig:
    """What `write_shapes_dataset` makes; saved as DIR/config.json."""

    num: int
    resolution: int = 128
    seed: int = 0
    workers: int = 2
    shapes: ShapesConfig = field(default_factory=ShapesConfig)

    def __post_init__(self):
        if not isinstance(self.num, int) or self.num < 1:
            raise ValueError(f"num must be a positive integer, got {self.num!r}")
        if not isinstance(self.resolution, int) or self.resolution < 16:
            raise ValueError(f"resolution must be an integer >= 16, got {self.resolution!r}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a positive integer, got {self.workers!r}")


def _write_chunk(task) -> list[str]:
    """Render images [start, stop) into `images_dir`; return their JSONL lines (in order)."""
    start, stop, config, images_dir, width = task
    lines = []
    for index in range(start, stop):
        seed = image_seed(config.seed, index)
        ex = make_example(seed, config.resolution, config.shapes)
        name = f"{index:0{width}d}.png"
        buf = io.BytesIO()
        # compress_level=1: ~3x faster than the default for ~10% larger files; PNG stays lossless.
        ex.image.save(buf, format="PNG", compress_level=1)
        with open(os.path.join(images_dir, name), "wb") as f:
            f.write(buf.getvalue())
        row = {
            "image": f"images/{name}",
            "captions": ex.captions,
            "metadata": ex.metadata,
            "seed": seed,
            "objects": scene_objects(ex.scene, config.resolution),
        }
        lines.append(json.dumps(row))
    return lines


def write_shapes_dataset(
    out: str | os.PathLike, config: ShapesDatasetConfig, overwrite: bool = False, progress: bool = False
) -> dict:
    """Write `config.num` images with captions and metadata to `out`; returns a summary dict.

    Refuses a non-empty `out` unless `overwrite` (then it is replaced whole, at the end).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} is not empty; choose a new folder or pass overwrite (--overwrite)")
    width = max(6, len(str(config.num - 1)))
    with atomic_dir(out) as tmp:
        images_dir = tmp / "images"
        images_dir.mkdir()
        # Small runs still get several tasks per worker so both processes have work.
        chunk = max(1, min(_CHUNK, -(-config.num // (4 * config.workers))))
        tasks = [
            (s, min(s + chunk, config.num), config, str(images_dir), width)
            for s in range(0, config.num, chunk)
        ]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=config.num, unit="img", desc="shapes")
        with open(tmp / "captions.jsonl", "w", encoding="utf-8") as f:
            for lines in _map(tasks, config.workers):
                f.write("\n".join(lines) + "\n")
                if bar is not None:
                    bar.update(len(lines))
        if bar is not None:
            bar.close()
        settings = {"format_version": FORMAT_VERSION, **asdict(config)}
        del settings["workers"]  # how fast it was made is not part of what was made
        (tmp / "config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return {"out": str(out), "images": config.num, "resolution": config.resolution, "seed": config.seed}


def _map(tasks, workers: int):
    """Chunks in order; in `workers` processes when more than one is asked for and useful."""
    if workers == 1 or len(tasks) == 1:
        yield from map(_write_chunk, tasks)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(_write_chunk, tasks)


class ShapesStream(torch.utils.data.IterableDataset):
    """ShapesWorld examples rendered on the fly: dicts {"image", "captions", "metadata", "seed"}.

    Example i is `make_example(image_seed(seed, i), ...)`, the same as row i of a folder written
    with the same seed. DataLoader workers (and `rank`/`world_size` for several processes)
    take disjoint indices. `length=None` streams forever. `transform` maps the PIL image
    (e.g. to a tensor in [-1, 1]) before it is yielded.
    """

    def __init__(
        self,
        resolution: int = 128,
        seed: int = 0,
        config: ShapesConfig = ShapesConfig(),
        length: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        transform=None,
    ):
        if not isinstance(resolution, int) or resolution < 16:
            raise ValueError(f"resolution must be an integer >= 16, got {resolution!r}")
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0 or None, got {length}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.resolution, self.seed, self.config = resolution, seed, config
        self.length, self.rank, self.world_size, self.transform = length, rank, world_size, transform

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("an endless ShapesStream has no length")
        return self.length

    def example(self, index: int) -> dict:
        seed = image_seed(self.seed, index)
        ex = make_example(seed, self.resolution, self.config)
        image = self.transform(ex.image) if self.transform is not None else ex.image
        return {"image": image, "captions": ex.captions, "metadata": ex.metadata, "seed": seed}

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        step = self.world_size * workers
        index = self.rank * workers + worker
        while self.length is None or index < self.length:
            yield self.example(index)
            index += step


__all__ = [
    "ShapesDatasetConfig",
    "ShapesExample",
    "ShapesStream",
    "example_scene",
    "image_seed",
    "make_example",
    "scene_objects",
    "write_shapes_dataset",
]
