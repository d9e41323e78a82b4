"""Rewrite the captions of a ShapesWorld data folder and its token shards with another caption
order, without rendering or tokenising again (the images and codes do not change).

Every row is made again from its own seed (`example_scene`, what `make_example` draws, no rendering):
the row's objects must come out the same, else the folder was not made with the given settings
and nothing is written. With `--order given` the captions must also come out byte-identical,
which checks the rewrite itself. Every row is checked before any file is replaced; each file is
replaced atomically.

    python scripts/recaption_shapes.py runs/r/data/high runs/r/tokens/high --order raster
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def _shapes_config(data_dir: Path, order: str):
    from simplear.data.shapes import ShapesConfig

    saved = json.loads((data_dir / "config.json").read_text())["shapes"]
    fields = {f.name for f in dataclasses.fields(ShapesConfig)}
    kwargs = {k: v for k, v in saved.items() if k in fields}
    kwargs["heldout"] = tuple(tuple(p) for p in kwargs.get("heldout", ()))
    kwargs["tag_weights"] = tuple(tuple(p) for p in kwargs.get("tag_weights", ()))
    kwargs["counts"] = tuple(kwargs.get("counts", ()))
    kwargs["caption_order"] = order
    return ShapesConfig(**kwargs), saved


def _remake(row: dict, config, resolution: int) -> dict:
    from simplear.data.captions import scene_metadata
    from simplear.data.shapes_dataset import example_scene, scene_objects

    scene, captions = example_scene(row["seed"], config)
    if scene_objects(scene, resolution) != row["objects"]:
        raise ValueError(f"row with seed {row['seed']}: its scene does not come out of the folder's settings")
    return {"captions": captions, "metadata": scene_metadata(scene)}


def _remade_lines(path: Path, config, resolution: int, check_same: bool) -> tuple[list[str], int]:
    changed, out = 0, []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        new = _remake(row, config, resolution)
        if check_same and (new["captions"] != row["captions"] or new["metadata"] != row["metadata"]):
            raise ValueError(f"{path}: seed {row['seed']} gives other captions than stored: {new['captions']}")
        changed += new["captions"] != row["captions"]
        row.update(new)
        out.append(json.dumps(row))
    return out, changed


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="the ShapesWorld data folder (config.json, captions.jsonl)")
    ap.add_argument("tokens", nargs="?", help="the token shard folder made from it (shard-*.jsonl)")
    ap.add_argument("--order", required=True, choices=("given", "raster"))
    args = ap.parse_args()
    data = Path(args.data)
    config, saved = _shapes_config(data, args.order)
    resolution = json.loads((data / "config.json").read_text())["resolution"]
    check = args.order == saved.get("caption_order", "given")
    files = [data / "captions.jsonl"] + (sorted(Path(args.tokens).glob("shard-*.jsonl")) if args.tokens else [])
    remade = [_remade_lines(path, config, resolution, check) for path in files]  # all checked before any write
    for path, (lines, _) in zip(files, remade):
        _write_atomic(path, "\n".join(lines) + "\n")
    total = sum(changed for _, changed in remade)
    settings = json.loads((data / "config.json").read_text())
    settings["shapes"]["caption_order"] = args.order
    _write_atomic(data / "config.json", json.dumps(settings, indent=2))
    print(f"{len(files)} file(s) rewritten, {total} row(s) with new captions (order {args.order})")


if __name__ == "__main__":
    main()
