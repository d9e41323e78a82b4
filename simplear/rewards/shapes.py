"""The verifiable ShapesWorld reward: the judge's verdict on each image against its prompt spec.

`ShapesReward(mode="partial")` returns the judge's partial credit (the fraction of the prompt's
clauses an image satisfies: a dense signal that still moves when no image in a group is fully
right); `mode="strict"` returns 1.0 for an image the judge calls correct and 0.0 otherwise (the
GenEval metric itself). The prompt text is not parsed: the GenEval metadata line is the spec,
so the reward can never disagree with the evaluation about what a prompt asks for.

The `exact` modes also ask for nothing else in the picture: no more objects of a named class than
the prompt asks for, and none of any other class. GenEval's rules only check excess objects on
counting prompts, so a policy trained on them learns that drawing extra objects is free (it gives
more chances to satisfy "an X and a Y") and then over-counts (docs/benchmarks.md, "What GRPO
learns about extra objects"). ShapesWorld's scenes hold exactly the objects their captions name, so
for them "nothing else" is part of what the prompt means. `exact` is 1.0 only for a correct image
with nothing extra; `exact-partial` is the partial credit with "nothing extra" counted as one more
clause.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from simplear.rewards.base import check_batch, to_pil_list

MODES = ("partial", "strict", "exact", "exact-partial")


def nothing_else(metadata: dict) -> list[dict]:
    """GenEval `exclude` clauses that forbid anything the prompt does not ask for: per named class,
    one more than the prompt's total count of it; per other class, one. Classes the prompt already
    limits as tightly (a counting prompt's own exclude) are left out."""
    from simplear.data.shapes import CLASSES

    wanted: dict[str, int] = {}
    for req in metadata["include"]:
        wanted[req["class"]] = wanted.get(req["class"], 0) + int(req["count"])
    limits = {req["class"]: int(req["count"]) for req in metadata.get("exclude", [])}
    clauses = []
    for cls in CLASSES:
        limit = wanted.get(cls, 0) + 1
        if limits.get(cls, limit + 1) > limit:
            clauses.append({"class": cls, "count": limit})
    return clauses


def _exact_values(verdict: Any, extra: int, partial: bool) -> float:
    """The exact modes' value from a verdict on metadata whose last `extra` clauses are `nothing_else`."""
    checks = verdict.details["checks"]
    own, added = checks[: len(checks) - extra], checks[len(checks) - extra :]
    clean = all(c["ok"] for c in added)
    if not partial:
        return 1.0 if clean and all(c["ok"] for c in own) else 0.0
    return (sum(c["ok"] for c in own) + clean) / (len(own) + 1)


def _with_nothing_else(metadata: dict) -> dict:
    return {**metadata, "exclude": [*metadata.get("exclude", []), *nothing_else(metadata)]}


class ShapesReward:
    """`reward(images, prompts, metadata) -> tensor[B]` from the ShapesWorld judge.

    `judge` defaults to `simplear.eval.judge.judge`; any callable `judge(image, metadata)`
    returning an object with `correct` and `score` works (tests pass a stand-in); the exact modes
    also read the verdict's `details["checks"]`, as the real judge writes them.
    """

    def __init__(self, mode: str = "partial", judge: Callable[[Any, dict], Any] | None = None):
        if mode not in MODES:
            raise ValueError(f"ShapesReward mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self._judge = judge

    def __repr__(self) -> str:
        return f"ShapesReward(mode={self.mode!r})"

    def _judge_fn(self) -> Callable[[Any, dict], Any]:
        if self._judge is None:
            from simplear.eval.judge import judge

            self._judge = judge
        return self._judge

    def judgements(self, images: Any, metadata: Sequence[dict]) -> list:
        """The judge's full verdicts (for logging reasons next to rewards); in the exact modes,
        on the metadata with the `nothing_else` clauses appended."""
        images = to_pil_list(images)
        if metadata is None:
            raise ValueError("ShapesReward needs GenEval metadata for every image (got metadata=None)")
        check_batch(images, None, metadata)
        judge = self._judge_fn()
        if self.mode.startswith("exact"):
            metadata = [_with_nothing_else(meta) for meta in metadata]
        return [judge(image, meta) for image, meta in zip(images, metadata)]

    def __call__(
        self, images: Any, prompts: Sequence[str] | None = None, metadata: Sequence[dict] | None = None
    ) -> torch.Tensor:
        images = to_pil_list(images)
        check_batch(images, prompts, metadata)
        verdicts = self.judgements(images, metadata)
        if self.mode.startswith("exact"):
            values = [_exact_values(v, len(nothing_else(meta)), self.mode == "exact-partial")
                      for v, meta in zip(verdicts, metadata)]
        elif self.mode == "strict":
            values = [1.0 if v.correct else 0.0 for v in verdicts]
        else:
            values = [float(v.score) for v in verdicts]
        return torch.tensor(values, dtype=torch.float32)
