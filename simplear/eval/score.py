"""Score a folder in GenEval's layout with the judge: `score_folder(DIR) -> dict`.

The layout (see ../shared/benchmarks/README.md) is one folder per prompt, numbered in file order:
`DIR/00000/metadata.jsonl` (the prompt's GenEval line) and `DIR/00000/samples/0000.png`, ...
Every image is judged against its folder's line; `DIR/results.jsonl` gets one row per image with
GenEval's fields (`filename`, `tag`, `prompt`, `correct`, `reason`, `metadata`, `details`; we
write `metadata` and `details` as JSON objects where GenEval writes them as JSON strings) plus
`score`, the judge's partial credit. The summary follows GenEval: the overall score is the mean
over tags of each tag's fraction of correct images.

A missing or unreadable image is a row judged incorrect with the reason, never a crash; a
prompt folder whose metadata is missing or names words ShapesWorld does not know is an error
(ValueError naming the folder), because its images cannot be scored at all.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simplear.eval.judge import JudgeConfig, judge, validate_metadata
from simplear.utils import atomic_write_text, format_down

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class ScoreConfig:
    processes: int = 1  # judge in this many worker processes (2 roughly doubles throughput)
    results_name: str = "results.jsonl"  # written inside the scored folder
    judge: JudgeConfig = field(default_factory=JudgeConfig)


def _read_metadata(folder: Path) -> dict:
    path = folder / "metadata.jsonl"
    if not path.is_file():
        raise ValueError(f"{folder}: no metadata.jsonl (GenEval layout: DIR/00000/metadata.jsonl)")
    lines = [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    try:
        metadata = json.loads(lines[0])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None
    try:
        validate_metadata(metadata)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return metadata


def list_jobs(folder: str | os.PathLike) -> list[tuple[str | None, dict, str]]:
    """(image path or None when missing, metadata, prompt folder) for every image to score."""
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    prompt_dirs = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not prompt_dirs:
        raise ValueError(f"{root} holds no prompt folders (GenEval layout: DIR/00000/samples/0000.png)")
    jobs: list[tuple[str | None, dict, str]] = []
    for prompt_dir in prompt_dirs:
        metadata = _read_metadata(prompt_dir)
        samples = prompt_dir / "samples"
        images = sorted(p for p in samples.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if samples.is_dir() else []
        if not images:
            jobs.append((None, metadata, str(prompt_dir)))
        jobs.extend((str(p), metadata, str(prompt_dir)) for p in images)
    return jobs


def _score_one(job: tuple[str | None, dict, str], config: JudgeConfig) -> dict[str, Any]:
    path, metadata, prompt_dir = job
    row: dict[str, Any] = {
        "filename": path if path is not None else str(Path(prompt_dir) / "samples"),
        "tag": metadata.get("tag"),
        "prompt": metadata.get("prompt", ""),
    }
    if path is None:
        verdict = {"correct": False, "reason": "missing: no images in samples/", "score": 0.0, "details": {}}
    else:
        try:
            j = judge(path, metadata, config)
            verdict = {"correct": j.correct, "reason": j.reason, "score": j.score, "details": j.details}
        except (OSError, ValueError) as err:  # unreadable or truncated file: incorrect, not fatal
            reason = f"unreadable image: {type(err).__name__}: {err}"
            verdict = {"correct": False, "reason": reason, "score": 0.0, "details": {}}
    return {**row, "correct": verdict["correct"], "reason": verdict["reason"], "metadata": metadata,
            "details": verdict["details"], "score": verdict["score"]}


def _score_chunk(args: tuple[list, JudgeConfig]) -> list[dict[str, Any]]:
    jobs, config = args
    return [_score_one(job, config) for job in jobs]


def score_rows(jobs: list, config: ScoreConfig = ScoreConfig()) -> list[dict[str, Any]]:
    """Judge every job, in `config.processes` worker processes when more than one."""
    if config.processes <= 1 or len(jobs) < 64:
        return _score_chunk((jobs, config.judge))
    import multiprocessing as mp

    n = config.processes * 4  # a few chunks per worker evens out slow images
    chunks = [(jobs[i::n], config.judge) for i in range(n)]
    with mp.get_context("spawn").Pool(config.processes) as pool:
        parts = pool.map(_score_chunk, chunks)
    rows: list = [None] * len(jobs)
    for i, part in enumerate(parts):
        rows[i::n] = part
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """GenEval's summary: per-tag accuracy, overall = mean over tags; plus mean partial credit."""
    by_tag: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        by_tag[row["tag"] or "untagged"].append(bool(row["correct"]))
    tags = {tag: sum(v) / len(v) for tag, v in by_tag.items()}
    return {
        "overall": sum(tags.values()) / len(tags) if tags else 0.0,
        "tags": tags,
        "images": len(rows),
        "correct": sum(bool(r["correct"]) for r in rows),
        "score": sum(float(r["score"]) for r in rows) / len(rows) if rows else 0.0,
        "counts": {tag: len(v) for tag, v in by_tag.items()},
    }


def score_folder(folder: str | os.PathLike, config: ScoreConfig | None = None) -> dict[str, Any]:
    """Judge every image under `folder`, write `folder/results.jsonl`, return the summary."""
    config = config or ScoreConfig()
    start = time.perf_counter()
    jobs = list_jobs(folder)
    rows = score_rows(jobs, config)
    results = Path(folder) / config.results_name
    atomic_write_text(results, "".join(json.dumps(row) + "\n" for row in rows))
    seconds = time.perf_counter() - start
    summary = summarize(rows)
    summary["results"] = str(results)
    summary["seconds"] = seconds  # reading, judging and writing results.jsonl
    summary["images_per_second"] = len(rows) / seconds if seconds > 0 else 0.0
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a small text table (tags in GenEval's order, then any others; truncated)."""
    from simplear.eval.judge import TAGS

    order = [t for t in TAGS if t in summary["tags"]] + sorted(set(summary["tags"]) - set(TAGS))
    lines = [f"{'tag':<15}{'accuracy':>10}{'images':>8}"]
    for tag in order:
        lines.append(f"{tag:<15}{format_down(summary['tags'][tag], 4):>10}{summary['counts'].get(tag, 0):>8}")
    lines.append(f"{'overall':<15}{format_down(summary['overall'], 4):>10}{summary['images']:>8}")
    return "\n".join(lines)


__all__ = ["ScoreConfig", "format_table", "list_jobs", "score_folder", "score_rows", "summarize"]
