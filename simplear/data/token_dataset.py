"""Training dataset over token shards: memory-mapped codes, checked against the tokenizer.

`TokenShardDataset(sources, visual_tokenizer=..., resolution=...)` reads one or several shard
folders written by `simplear data tokenize` and yields `{"codes": LongTensor h x w, "captions":
list[str], "source": int}`. Codes stay memory-mapped (`np.load(mmap_mode="r")`), so a dataset
larger than RAM costs only its captions in memory.

Every source's `manifest.json` must name the same tokenizer (kind, codebook size and weight hash)
and resolution as the ones given: codes from another tokenizer would train the model on
meaningless tokens without any error, so a mismatch raises instead.

Mixtures follow SimpleAR's (LLaVA-style) per-source sampling strategies, applied to a source's
rows in manifest order:
- `all`: every row;  `first:N` / `end:N`: the first / last N rows;
- `random:N`: N rows drawn without replacement (seeded);
- N may be a count or a percentage (`first:10%`); a bare `N%` means `random:N%`.
Asking for more rows than a source has is an error, not a silent cap.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from simplear.data.shards import FORMAT
from simplear.visual_tokenizers import same_codes


@dataclass(frozen=True)
class TokenSource:
    """One shard folder and how many of its rows to use."""

    path: str
    strategy: str = "all"


def parse_source(text: str) -> TokenSource:
    """`DIR` or `DIR@STRATEGY` (e.g. `runs/shards-64@random:50%`) -> TokenSource."""
    path, _, strategy = text.partition("@")
    return TokenSource(path, strategy or "all")


def select_rows(strategy: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of the rows of an n-row source that `strategy` keeps."""
    strategy = strategy.strip()
    if strategy == "all":
        return np.arange(n)
    if ":" in strategy:
        kind, _, amount = strategy.partition(":")
    elif strategy.endswith("%"):
        kind, amount = "random", strategy
    else:
        raise ValueError(f"unknown sampling strategy {strategy!r}; use all, first:N, end:N, random:N or N%")
    if kind not in ("first", "end", "random"):
        raise ValueError(f"unknown sampling strategy {kind!r} in {strategy!r}; use first, end or random")
    try:
        if amount.endswith("%"):
            percent = float(amount[:-1])
            if not 0 <= percent <= 100:
                raise ValueError
            count = math.ceil(percent * n / 100)
        else:
            count = int(amount)
            if count < 0:
                raise ValueError
    except ValueError:
        raise ValueError(f"bad amount {amount!r} in strategy {strategy!r}: a count >= 0 or a percentage 0-100%") from None
    if count > n:
        raise ValueError(f"strategy {strategy!r} asks for {count} rows but the source has only {n}")
    if kind == "first":
        return np.arange(count)
    if kind == "end":
        return np.arange(n - count, n)
    return np.sort(rng.choice(n, size=count, replace=False))


def _as_source(source) -> TokenSource:
    if isinstance(source, TokenSource):
        return source
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return TokenSource(str(source[0]), str(source[1]))
    if isinstance(source, (str, Path)):
        return TokenSource(str(source))
    raise ValueError(f"a source is a folder, (folder, strategy) or TokenSource; got {source!r}")


def _expected_identity(visual_tokenizer) -> dict:
    from simplear.visual_tokenizers import load_visual_tokenizer, tokenizer_identity

    if isinstance(visual_tokenizer, dict):  # an identity dict, e.g. from a bundle or a manifest
        return visual_tokenizer
    if isinstance(visual_tokenizer, (str, Path)):
        visual_tokenizer = load_visual_tokenizer(visual_tokenizer)
    return tokenizer_identity(visual_tokenizer)


class _Shards:
    """One shard folder: manifest, memory-mapped code arrays, captions."""

    def __init__(self, folder: Path, identity: dict, resolution: int):
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path} not found: not a finished token shard folder")
        self.manifest = manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest_path} is not a simplear token shard manifest")
        theirs = manifest["visual_tokenizer"]
        key = same_codes(theirs, identity)
        if key is not None:
            raise ValueError(
                f"{folder} was tokenised with another visual tokenizer ({key}: {theirs.get(key)!r}, "
                f"expected {identity.get(key)!r}); re-tokenise it with this tokenizer"
            )
        if manifest["resolution"] != resolution:
            raise ValueError(f"{folder} holds {manifest['resolution']} px codes, but {resolution} px were asked for")
        self.grid = tuple(manifest["grid"])
        self.codes, self.captions = [], []
        for shard in manifest["shards"]:
            codes = np.load(folder / f"{shard['name']}.npy", mmap_mode="r")
            if codes.shape[0] != shard["rows"] or tuple(codes.shape[1:]) != self.grid:
                raise ValueError(f"{folder / shard['name']}.npy has shape {codes.shape}, manifest says {shard['rows']} x {self.grid}")
            with open(folder / f"{shard['name']}.jsonl", encoding="utf-8") as f:
                captions = [json.loads(line)["captions"] for line in f if line.strip()]
            if len(captions) != shard["rows"]:
                raise ValueError(f"{folder / shard['name']}.jsonl has {len(captions)} rows, manifest says {shard['rows']}")
            self.codes.append(codes)
            self.captions += captions
        self.offsets = np.cumsum([0] + [c.shape[0] for c in self.codes])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def row(self, i: int) -> tuple[np.ndarray, list[str]]:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.codes[k][i - self.offsets[k]], self.captions[i]


class TokenShardDataset(Dataset):
    """Rows of one or several token shard folders (a mixture), each with its sampling strategy."""

    def __init__(self, sources, *, visual_tokenizer, resolution: int, seed: int = 0):
        """`sources`: a folder, a TokenSource, or a list of folders / (folder, strategy) / TokenSource.
        `visual_tokenizer`: the tokenizer (or its folder, or its identity dict) the codes must come from.
        """
        if isinstance(sources, (str, Path, TokenSource)):
            sources = [sources]
        self.sources = [_as_source(s) for s in sources]
        if not self.sources:
            raise ValueError("TokenShardDataset needs at least one source")
        identity = _expected_identity(visual_tokenizer)
        self.resolution = int(resolution)
        self.folders = [_Shards(Path(s.path), identity, self.resolution) for s in self.sources]
        self.grid = self.folders[0].grid
        self.codebook_size = int(identity["codebook_size"])
        index = []
        for i, (source, folder) in enumerate(zip(self.sources, self.folders)):
            rows = select_rows(source.strategy, len(folder), np.random.default_rng([seed, i]))
            index.append(np.stack([np.full(len(rows), i), rows], axis=1))
        self.index = np.concatenate(index) if index else np.zeros((0, 2), dtype=np.int64)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} rows")
        source, row = self.index[i]
        codes, captions = self.folders[source].row(int(row))
        return {"codes": torch.from_numpy(codes.astype(np.int64)), "captions": list(captions), "source": int(source)}

    def source_sizes(self) -> list[int]:
        """Rows taken from each source (after its strategy)."""
        return np.bincount(self.index[:, 0], minlength=len(self.sources)).tolist()
