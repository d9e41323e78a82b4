"""Resolve a Hugging Face hub id (e.g. `Daniel0724/SimpleAR-0.5B-RL`) to a local folder.

Local folders always win. A hub id is looked up in `huggingface_hub`'s local cache first (so
`HF_HUB_OFFLINE=1` works with a filled cache), and downloaded only when the network is allowed.
Any failure becomes one clear `FileNotFoundError` that suggests passing a local folder instead,
never a traceback from deep inside the hub client.

The cache location and the offline switch are read from the environment at call time (not at
import time, as `huggingface_hub.constants` does), so a caller may change `HF_HOME` at runtime.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def is_hub_id(name: str) -> bool:
    """`owner/name` with no other slashes: the shape of a hub repository id."""
    return bool(_HUB_ID.match(str(name))) and not str(name).startswith((".", "/", "~"))


def hub_cache_dir() -> Path:
    """The hub cache folder, as huggingface_hub computes it, from the current environment."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def resolve_path(name_or_path: str | os.PathLike, what: str = "model", revision: str | None = None) -> Path:
    """A local folder for `name_or_path`: the folder itself, or a hub id's cached snapshot.

    `what` only words the error message ("model", "visual tokenizer", ...).
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{what} path {path} is a file; expected a folder")
        return path
    name = str(name_or_path)
    if not is_hub_id(name):
        raise FileNotFoundError(f"{what} folder {name!r} does not exist")
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    try:
        return Path(snapshot_download(name, revision=revision, cache_dir=cache, local_files_only=True))
    except Exception as cached_err:  # noqa: BLE001 - any hub failure becomes one clear message
        reason = f"not in the local hub cache {cache} ({type(cached_err).__name__})"
    if not hub_offline():
        try:
            return Path(snapshot_download(name, revision=revision, cache_dir=cache))
        except Exception as err:  # noqa: BLE001
            reason += f"; download failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    else:
        reason += "; HF_HUB_OFFLINE is set, so nothing was downloaded"
    raise FileNotFoundError(
        f"cannot find {what} {name!r}: it is not a local folder and {reason}. "
        f"Download it where you have a network (`huggingface-cli download {name} --local-dir DIR`) "
        f"and pass the local folder DIR instead."
    )
