"""Judge a model bundle on a GenEval-style prompt suite: generate K images per prompt, score them.

Used by GRPO's periodic evaluation and by the recipe after each stage. GenEval's protocol:
per-image correctness, accuracy per tag, `overall` = the mean over the tags present. Also
reports the judge's mean partial credit and, when the prompts mark held-out (colour, class)
pairs, the overall score on those prompts and on the rest separately.

Sampling is the fast engine (it draws from the same distribution as the reference sampler), with
the bundle's sampling defaults unless a `SamplingConfig` is given; seeds are per batch, so a
result is reproducible for a given (seed, batch_size).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch


def spread(items: Sequence, count: int) -> list:
    """`count` items evenly spaced through `items` (all when count is 0), so a short suite still
    covers every tag (the suite lists its prompts tag by tag)."""
    if not count or count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def geneval_table(records: Sequence[dict]) -> dict:
    """{"overall", "tags": {tag: accuracy}, "images", "partial"} from per-image records
    (`tag`, `correct`, `score`)."""
    by_tag: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_tag[r["tag"]].append(1.0 if r["correct"] else 0.0)
    tags = {tag: sum(v) / len(v) for tag, v in sorted(by_tag.items())}
    overall = sum(tags.values()) / len(tags) if tags else 0.0
    partial = sum(float(r["score"]) for r in records) / len(records) if records else 0.0
    return {"overall": overall, "tags": tags, "images": len(records), "partial": partial}


def is_heldout(metadata: dict, pairs: set[tuple[str, str]] | None) -> bool:
    """True when the prompt says it is held out, or names a held-out (colour, class) pair."""
    if "heldout" in metadata:
        return bool(metadata["heldout"])
    if not pairs:
        return False
    return any((c.get("color"), c.get("class")) in pairs for c in metadata.get("include", []))


def heldout_pairs() -> set[tuple[str, str]]:
    """ShapesWorld's held-out (colour, class) pairs, where the data module defines them."""
    from simplear.data import shapes

    for name in ("DEFAULT_HELDOUT", "HELDOUT_PAIRS"):
        if hasattr(shapes, name):
            return {tuple(p) for p in getattr(shapes, name)}
    return set()


def judge_codes(visual_tokenizer: Any, codes: torch.Tensor, items: Sequence[dict], *, batch_size: int = 16) -> list[dict]:
    """Decode `codes` (one image per metadata line of `items`) and judge them: one record per image
    (see `evaluate_bundle`). Decoded a batch at a time (the tokenizer splits it further on a CPU)."""
    from simplear.eval.judge import judge_batch
    from simplear.visual_tokenizers.images import tensor_to_pil

    pairs = heldout_pairs()
    records = []
    for start in range(0, len(items), batch_size):
        images = tensor_to_pil(visual_tokenizer.decode(codes[start : start + batch_size]))
        chunk = items[start : start + batch_size]
        for meta, verdict in zip(chunk, judge_batch(images, chunk)):
            records.append({"prompt": meta["prompt"], "tag": meta["tag"], "correct": bool(verdict.correct),
                            "score": float(verdict.score), "reason": verdict.reason,
                            "heldout": is_heldout(meta, pairs), "objects": verdict.details.get("counted"),
                            "classes": verdict.details.get("classes"),
                            "asked": sum(int(req["count"]) for req in meta["include"])})
    return records


def records_table(records: Sequence[dict]) -> dict:
    """GenEval's table of `records`, plus "heldout" / "seen" tables when some prompts are held out."""
    result = geneval_table(records)
    held = [r for r in records if r["heldout"]]
    if held:
        result["heldout"] = geneval_table(held)
        result["seen"] = geneval_table([r for r in records if not r["heldout"]])
    return result


@torch.no_grad()
def generate_codes(bundle: Any, prompts: Sequence[str], *, seed: int, sampling=None, batch_size: int = 16,
                   engine=None) -> torch.Tensor:
    """Codes N×h×w for `prompts` (one image each), in batches, with the fast engine."""
    from simplear.sampling.config import SamplingConfig
    from simplear.sampling.engine import FastEngine

    model = bundle.model
    device = next(model.parameters()).device
    vocab = bundle.vocab
    if sampling is None:
        sampling = SamplingConfig.from_dict(bundle.config.sampling.to_dict())
    if engine is None:
        engine = FastEngine(model, vocab.visual_offset, vocab.codebook_size)
    grid = tuple(bundle.config.grid)
    uncond = [vocab.encode_unconditional()]
    out = []
    for n, start in enumerate(range(0, len(prompts), batch_size)):
        chunk = [vocab.encode_prompt(p) for p in prompts[start : start + batch_size]]
        generator = torch.Generator(device=device).manual_seed(seed * 100_003 + n)
        result = engine.sample(chunk, uncond, num_tokens=grid[0] * grid[1], generator=generator,
                               config=sampling, pad_id=vocab.pad_id)
        out.append(result.codes.view(-1, *grid))
    return torch.cat(out) if out else torch.zeros((0, *grid), dtype=torch.long)


def evaluate_bundle(bundle: Any, metadata: Sequence[dict], *, images_per_prompt: int = 4, seed: int = 0,
                    sampling=None, batch_size: int = 16, records_out: list | None = None) -> dict:
    """Generate `images_per_prompt` images per metadata line and judge them (GenEval's table).

    Returns {"overall", "tags", "images", "partial", "seconds"} plus "heldout" / "seen" (each
    {"overall", "tags", "images"}) when some prompts involve held-out pairs. `records_out`, when
    given, receives one dict per image (prompt, tag, correct, score, reason, heldout, and `objects`
    the judge counted against `asked`, the number the prompt names, with `classes`: {class: count}).
    """
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    started = time.perf_counter()
    items = [m for m in metadata for _ in range(images_per_prompt)]
    codes = generate_codes(bundle, [m["prompt"] for m in items], seed=seed, sampling=sampling,
                           batch_size=batch_size)
    records = judge_codes(bundle.visual_tokenizer, codes, items, batch_size=batch_size)
    result = records_table(records)
    result["seconds"] = time.perf_counter() - started
    if records_out is not None:
        records_out.extend(records)
    return result
