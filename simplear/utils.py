"""Small shared helpers: atomic file writes, device choice, seeding.

Everything that writes an artifact (checkpoints, shards, images, manifests) goes through the
atomic helpers here, so a killed process never leaves a half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    # Read without changing it where the kernel tells it (os.umask can only be read by setting it).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); the result should get the mode any new file gets.
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success it is renamed to `path`.

    For writers that want a file name (safetensors `save_file`, `torch.save`, `Image.save`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        # A writer may replace the file it was given (safetensors' `save_file` leaves it 0600).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _unprivate(folder: Path) -> None:
    """Give files that a library wrote privately (e.g. 0600 through its own temporary file, as
    transformers' save_pretrained does) the umask's mode; execute bits are kept."""
    umask = _umask()
    for item in folder.rglob("*"):
        if item.is_file() and not item.is_symlink():
            current = item.stat().st_mode & 0o777
            wanted = current | (0o666 & ~umask)
            if wanted != current:
                os.chmod(item, wanted)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder beside `path`; on success it replaces `path` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700), like _tmp_sibling's files
    try:
        yield tmp
        _unprivate(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def iter_jsonl(path: str | os.PathLike, what: str = "", with_text: bool = False):
    """Yield (line number, object) for each non-blank line of a JSONL file; with `with_text`,
    (line number, object, the line's stripped text), for readers that keep lines verbatim.

    Errors name the file and the line: a missing file (called `what` in the message, e.g.
    "prompt file"), a line that is not JSON, or a line that is not a JSON object. Every JSONL
    reader of the project goes through here.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what + ' ' if what else ''}{path} does not exist")
    with open(path, encoding="utf-8") as f:
        for lineno, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(item, dict):
                raise ValueError(f"{path}:{lineno}: each line must be a JSON object, got {type(item).__name__}")
            yield (lineno, item, text.strip()) if with_text else (lineno, item)


def pick_device(device: str | None = None):
    """`device` as given, else CUDA when present, else CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX-BF16).

    There bf16 matmuls run several times faster than float32 (on the 2-core AMD EPYC of
    docs/benchmarks.md, 401 against 137 GFLOP/s); elsewhere they are emulated and slower.
    Reads the kernel's CPU flags, so it is False off Linux.
    """
    try:
        text = CPUINFO.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    """A trainer config's `precision` field must be one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def uses_bf16_autocast(precision: str, device) -> bool:
    """Resolve a trainer's `precision` ("auto" | "fp32" | "bf16") on `device`.

    "auto" is bf16 autocast on CUDA and on CPUs with native bf16 matmuls, float32 elsewhere.
    """
    if precision == "bf16":
        return True
    if precision != "auto":
        return False
    kind = getattr(device, "type", str(device))
    return kind == "cuda" or (kind == "cpu" and cpu_has_native_bf16())


def autocast_factory(precision: str, device):
    """A zero-argument callable giving the forward-pass context for `precision` on `device`:
    `torch.autocast(bf16)` where `uses_bf16_autocast` says so, else a no-op context."""
    import contextlib

    import torch

    if not uses_bf16_autocast(precision, device):
        return contextlib.nullcontext
    kind = getattr(device, "type", str(device))
    return lambda: torch.autocast(device_type=kind, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to reuse freed memory instead of handing it back to the kernel.

    By default glibc serves every large tensor with a fresh mmap and unmaps it when the tensor is
    freed, so a CPU training step that allocates and frees its activations takes tens of thousands
    of page faults per second (the kernel zeroes every new page): on the 2-core dev box half the
    CPU time went to the kernel and pretraining ran at 2,700 tokens/s instead of 3,600 (see
    docs/benchmarks.md). Keeping allocations up to 32 MiB on the heap and never trimming it
    removes that; the cost is that the process keeps its peak memory. Same as setting
    MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_. Called by the CLI, never
    on import; a no-op (returns False) where the C library is not glibc, or when the environment
    sets SIMPLEAR_KEEP_FREED_MEMORY=0 (to compare, or to keep a long-lived process's memory low).
    """
    import ctypes
    import ctypes.util
    import platform

    if os.environ.get("SIMPLEAR_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        ok &= libc.mallopt(_M_TOP_PAD, 256 * 1024 * 1024)
    except (OSError, AttributeError):
        return False
    return bool(ok)


def format_down(value: float, digits: int) -> str:
    """`value` with `digits` decimals, cut toward -inf instead of rounded: a printed figure is
    never above what was measured (7.996x prints as 7.99x, not 8.00x)."""
    scale = 10**digits
    return f"{math.floor(value * scale + 1e-9) / scale:.{digits}f}"  # 1e-9: 0.29 * 100 is 28.999...


def state_sha256(module, prefix: bytes = b"") -> str:
    """sha256 of `prefix` then a module's state (names and raw bytes of every tensor, sorted by name,
    any dtype or device): a weight file's identity that survives moving or re-saving it."""
    import torch

    digest = hashlib.sha256(prefix)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
