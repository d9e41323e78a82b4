"""Images + captions -> token shards (`simplear data tokenize`), resumable and multi-process.

Input: a JSONL whose lines have `image` (path relative to the JSONL file, or absolute) and
`captions` (a list of strings; a single string is accepted), e.g. ShapesWorld's `captions.jsonl`.
Every image is centre-cropped and resized to `resolution` (`visual_tokenizers/images.py`) and
encoded once; the AR model then trains on cached codes.

Output folder:
- `shard-00000.npy`: codes N x h x w (uint16 when the codebook fits, else int32);
- `shard-00000.jsonl`: one line per row, `{"line", "image", "captions", ...other input keys}`;
- `shard-00000.json`: the shard's row count and skipped lines, written after the two files above,
  so it marks the shard as finished (a rerun skips finished shards: that is the resume);
- `tokenize.json`: the run's identity (tokenizer, resolution, input, shard size), written first,
  so a rerun with another tokenizer or resolution into the same folder is refused;
- `manifest.json`: written last, when every shard is done (see `build_manifest`).

`snap_color` (an RGB colour, e.g. a dataset's plain background) gives every patch that lies, with
its `snap_radius` ring of neighbouring patches, wholly in that colour the one code a uniform image
of that colour encodes to. A convolutional encoder sees past its patch, so it gives such patches
many near-identical codes; the AR model would spend capacity learning which. Patches next to
anything else keep their own codes, so edges decode as before (`scripts/snap_background.py`
measures the round trip and the entropy either way).

Shard k always holds input lines [k * shard_size, (k + 1) * shard_size) minus skipped ones, and
under `torchrun --nproc_per_node=N` rank r does shards r, r + N, ...: the output does not depend
on the number of processes. Unreadable, missing or truncated images and malformed lines are
skipped and counted with a reason, never replaced by another sample.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simplear.utils import atomic_path, atomic_write_json, atomic_write_text
from simplear.visual_tokenizers import load_visual_tokenizer, tokenizer_identity
from simplear.visual_tokenizers.images import center_crop_resize, pil_to_tensor

FORMAT = "simplear-token-shards"
CROP_POLICY = "RGB, centre crop to the largest square, bicubic resize to resolution x resolution"


@dataclass(frozen=True)
class TokenizeConfig:
    data: str  # captions JSONL
    tokenizer: str  # visual tokenizer folder
    out: str  # shard folder
    resolution: int
    shard_size: int = 1000
    batch_size: int = 32
    device: str | None = None  # default: cuda:LOCAL_RANK when CUDA exists, else CPU
    limit: int | None = None  # only the first `limit` lines
    snap_color: tuple[int, int, int] | None = None  # one code for flat patches of this RGB colour
    snap_radius: int = 1  # ... when their (2r+1) x (2r+1) patch neighbourhood is all that colour

    def __post_init__(self):
        if self.resolution <= 0 or self.shard_size <= 0 or self.batch_size <= 0:
            raise ValueError("resolution, shard_size and batch_size must be positive")
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must be >= 0")
        if self.snap_color is not None:
            color = tuple(self.snap_color)
            if len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color):
                raise ValueError(f"snap_color must be three integers in 0..255 (R, G, B), got {self.snap_color!r}")
            object.__setattr__(self, "snap_color", color)
        if self.snap_radius < 0:
            raise ValueError(f"snap_radius must be >= 0, got {self.snap_radius}")


def uniform_code(tokenizer, color: tuple[int, int, int], resolution: int) -> int:
    """The code a uniform image of `color` encodes to (the most common one, should the borders differ)."""
    image = Image.new("RGB", (resolution, resolution), tuple(color))
    with torch.inference_mode():
        codes = tokenizer.encode(pil_to_tensor([image])).flatten()
    return int(torch.mode(codes.cpu()).values)


def flat_patches(images: torch.Tensor, color: tuple[int, int, int], patch: int) -> torch.Tensor:
    """B x h x w: which `patch` x `patch` patches of `images` (B x 3 x H x W in the tokenizer's
    [-1, 1], as `pil_to_tensor` makes them) are `color` at every pixel, to within half a level."""
    target = torch.tensor(color, dtype=images.dtype, device=images.device).view(1, 3, 1, 1) / 255 * 2 - 1
    off = (images - target).abs().amax(dim=1, keepdim=True) >= 1 / 255  # a level is 2/255 in [-1, 1]
    return torch.nn.functional.max_pool2d(off.float(), patch).squeeze(1) == 0


def snap_flat(codes: torch.Tensor, images: torch.Tensor, color: tuple[int, int, int], radius: int,
              code: int) -> tuple[torch.Tensor, int]:
    """(codes with `code` on every flat patch of `color` whose neighbourhood is all such, how many).

    `codes` B x h x w for `images` B x 3 x H x W (see `flat_patches`). Beyond the image border counts
    as flat, so corner patches can snap too.
    """
    flat = flat_patches(images, color, images.shape[-1] // codes.shape[-1])
    if radius:  # erosion: a patch snaps only when every patch within `radius` is flat too
        flat = torch.nn.functional.max_pool2d((~flat).float().unsqueeze(1), 2 * radius + 1, 1, radius).squeeze(1) == 0
    flat = flat.to(codes.device)
    return torch.where(flat, torch.full_like(codes, code), codes), int(flat.sum())


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _dist_setup():
    """(rank, world, created): join torchrun's process group (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), True


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _parse_line(line: str, base: Path) -> tuple[dict | None, Path | None, str | None, str]:
    """(item, image path, skip reason, detail) for one JSONL line."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        return None, None, "bad_json", str(err)
    if not isinstance(item, dict) or not isinstance(item.get("image"), str):
        return None, None, "missing_image_field", "line has no string 'image'"
    captions = item.get("captions", item.get("caption"))
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
        return None, None, "no_captions", "'captions' must be a non-empty list of strings"
    item["captions"] = captions
    path = Path(item["image"])
    return item, (path if path.is_absolute() else base / path), None, ""


def _load_image(path: Path, resolution: int) -> tuple[Image.Image | None, str | None, str]:
    if not path.is_file():
        return None, "missing_file", f"{path} not found"
    try:
        with Image.open(path) as image:
            image.load()  # decode now: truncated files fail here, not later in a batch
            return center_crop_resize(image, resolution), None, ""
    except Exception as err:  # any decoder failure is the file's fault: skip it, say why
        return None, "unreadable_image", f"{type(err).__name__}: {err}"


def code_dtype(codebook_size: int) -> np.dtype:
    """How shards store codes: uint16 when the codebook fits, else int32."""
    return np.dtype(np.uint16 if codebook_size <= 2**16 else np.int32)


def _tokenize_shard(k: int, lines: list[str], first: int, cfg: TokenizeConfig, tokenizer, out: Path,
                    snap: int | None = None) -> None:
    """Encode input lines [first, first + len(lines)) into shard k (three files, sidecar last)."""
    base = Path(cfg.data).parent
    grid = cfg.resolution // tokenizer.downsample
    dtype = code_dtype(tokenizer.codebook_size)
    rows, pending, chunks, skipped, snapped = [], [], [], [], [0]

    def flush() -> None:  # encode as we go: a shard of large images never sits in memory whole
        if pending:
            images = pil_to_tensor(pending)
            codes = tokenizer.encode(images)
            if snap is not None:
                codes, n = snap_flat(codes, images, cfg.snap_color, cfg.snap_radius, snap)
                snapped[0] += n
            chunks.append(codes.cpu().numpy().astype(dtype))
            pending.clear()

    for offset, line in enumerate(lines):
        index = first + offset
        item, path, reason, detail = _parse_line(line, base)
        image = None
        if reason is None:
            image, reason, detail = _load_image(path, cfg.resolution)
        if reason is not None:
            name = item.get("image") if item else None
            skipped.append({"line": index, "image": name, "reason": reason, "detail": detail})
            continue
        rows.append({"line": index, **item})
        pending.append(image)
        if len(pending) == cfg.batch_size:
            flush()
    flush()
    codes = np.concatenate(chunks) if chunks else np.zeros((0, grid, grid), dtype=dtype)
    name = shard_name(k)
    with atomic_path(out / f"{name}.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, codes)  # through a file object: np.save(path) would append ".npy" to the temp name
    atomic_write_text(out / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    sidecar = {"rows": len(rows), "lines": [first, first + len(lines)], "skipped": skipped}
    if snap is not None:
        sidecar["snapped"] = snapped[0]
    atomic_write_json(out / f"{name}.json", sidecar)


def build_manifest(out: Path, run: dict, num_shards: int) -> dict:
    """Gather the shard sidecars into `manifest.json` (the last file written)."""
    shards, skipped, snapped = [], [], 0
    for k in range(num_shards):
        sidecar = out / f"{shard_name(k)}.json"
        if not sidecar.is_file():
            raise ValueError(f"{sidecar} is missing: shard {k} did not finish; rerun to resume")
        info = json.loads(sidecar.read_text())
        shards.append({"name": shard_name(k), "rows": info["rows"], "lines": info["lines"]})
        skipped += info["skipped"]
        snapped += info.get("snapped", 0)
    if "snap" in run:
        run = {**run, "snap": {**run["snap"], "snapped": snapped}}
    manifest = {
        "format": FORMAT,
        "version": 1,
        **run,
        "count": sum(s["rows"] for s in shards),
        "shards": shards,
        "num_skipped": len(skipped),
        "skipped_reasons": dict(sorted(Counter(s["reason"] for s in skipped).items())),
        "skipped": skipped,
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def tokenize_dataset(cfg: TokenizeConfig, visual_tokenizer=None, log=print) -> dict | None:
    """Tokenise `cfg.data` into shards in `cfg.out`; returns the manifest (None on ranks > 0).

    `visual_tokenizer`: an already loaded tokenizer (else `cfg.tokenizer` is loaded).
    """
    data, out = Path(cfg.data), Path(cfg.out)
    if not data.is_file():
        raise FileNotFoundError(f"captions file {data} not found")
    rank, world, created = _dist_setup()
    try:
        # 1. Tokenizer on this rank's device, and the run identity that shards must share.
        if visual_tokenizer is None:
            device = cfg.device
            if device is None and torch.cuda.is_available():
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            visual_tokenizer = load_visual_tokenizer(cfg.tokenizer, device=device)
        if cfg.resolution % visual_tokenizer.downsample:
            raise ValueError(f"resolution {cfg.resolution} is not divisible by the tokenizer's downsampling {visual_tokenizer.downsample}")
        lines = [ln for ln in data.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if cfg.limit is not None:
            lines = lines[: cfg.limit]
        grid = cfg.resolution // visual_tokenizer.downsample
        run = {
            "visual_tokenizer": tokenizer_identity(visual_tokenizer),
            "resolution": cfg.resolution,
            "grid": [grid, grid],
            "dtype": code_dtype(visual_tokenizer.codebook_size).name,
            "crop": CROP_POLICY,
            "source": str(data.resolve()),
            "lines": len(lines),
            "shard_size": cfg.shard_size,
        }
        snap = None
        if cfg.snap_color is not None:  # only then: shards made before the option keep their identity
            snap = uniform_code(visual_tokenizer, cfg.snap_color, cfg.resolution)
            run["snap"] = {"color": list(cfg.snap_color), "radius": cfg.snap_radius, "code": snap}
        # 2. Refuse to mix runs in one folder; finish early when the manifest is already there.
        out.mkdir(parents=True, exist_ok=True)
        run_path = out / "tokenize.json"
        if rank == 0 and not run_path.exists():
            atomic_write_json(run_path, run)
        _barrier(world)
        previous = json.loads(run_path.read_text())
        if "codes_sha256" not in previous["visual_tokenizer"]:  # begun before identities had it: resume it
            run["visual_tokenizer"] = {k: v for k, v in run["visual_tokenizer"].items() if k != "codes_sha256"}
        if previous != run:
            changed = sorted(k for k in set(run) | set(previous) if run.get(k) != previous.get(k))
            raise ValueError(f"{out} holds shards of another run (differs in {', '.join(changed)}); use a fresh --out")
        num_shards = math.ceil(len(lines) / cfg.shard_size)
        manifest_path = out / "manifest.json"
        if manifest_path.exists():
            if rank == 0:
                log(f"{manifest_path} exists: nothing to do")
            return json.loads(manifest_path.read_text()) if rank == 0 else None
        # 3. This rank's shards, skipping the finished ones (resume).
        t0, done, images = time.time(), 0, 0
        for k in range(rank, num_shards, world):
            if (out / f"{shard_name(k)}.json").is_file():
                continue
            first = k * cfg.shard_size
            _tokenize_shard(k, lines[first : first + cfg.shard_size], first, cfg, visual_tokenizer, out, snap)
            done += 1
            images += len(lines[first : first + cfg.shard_size])
            log(f"[rank {rank}] {shard_name(k)} done ({images / max(time.time() - t0, 1e-9):.1f} images/s)")
        # 4. Everyone finished: rank 0 writes the manifest, last.
        _barrier(world)
        if rank != 0:
            return None
        return build_manifest(out, run, num_shards)
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()
