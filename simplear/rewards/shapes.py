"""The verifiable ShapesWorld reward: the judge's verdict on each image against its prompt spec.

`ShapesReward(mode="partial")` returns the judge's partial credit (the fraction of the prompt's
clauses an image satisfies: a dense signal that still moves when no image in a group is fully
right); `mode="strict"` returns 1.0 for an image the judge calls correct and 0.0 otherwise (the
GenEval metric itself). The prompt text is not parsed: the GenEval metadata line is the spec,
so the reward can never disagree with the evaluation about what a prompt asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from simplear.rewards.base import check_batch, to_pil_list

MODES = ("partial", "strict")


class ShapesReward:
    """`reward(images, prompts, metadata) -> tensor[B]` from the ShapesWorld judge.

    `judge` defaults to `simplear.eval.judge.judge`; any callable `judge(image, metadata)`
    returning an object with `correct` and `score` works (tests pass a stand-in).
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
        """The judge's full verdicts (for logging reasons next to rewards)."""
        images = to_pil_list(images)
        if metadata is None:
            raise ValueError("ShapesReward needs GenEval metadata for every image (got metadata=None)")
        check_batch(images, None, metadata)
        judge = self._judge_fn()
        return [judge(image, meta) for image, meta in zip(images, metadata)]

    def __call__(
        self, images: Any, prompts: Sequence[str] | None = None, metadata: Sequence[dict] | None = None
    ) -> torch.Tensor:
        images = to_pil_list(images)
        check_batch(images, prompts, metadata)
        verdicts = self.judgements(images, metadata)
        if self.mode == "strict":
            values = [1.0 if v.correct else 0.0 for v in verdicts]
        else:
            values = [float(v.score) for v in verdicts]
        return torch.tensor(values, dtype=torch.float32)
