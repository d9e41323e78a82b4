"""Weighted sums of rewards, and reward specs as strings (for the CLI and saved configs).

`WeightedReward([(0.8, ShapesReward()), (0.2, ClipReward(path))])` is itself a reward. A spec
string names the same thing in one line: terms joined by `+`, each `[WEIGHT*]NAME[:ARG]` with
NAME one of `shapes` (ARG `partial` | `strict` | `exact` | `exact-partial`) or `clip` (ARG the CLIP folder), e.g.
`shapes`, `shapes:strict`, `0.8*shapes+0.2*clip:/models/clip-vit-b32`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from simplear.rewards.base import Reward


class WeightedReward:
    """Sum of `weight * reward(images, prompts, metadata)` over its terms."""

    def __init__(self, terms: Sequence[tuple[float, Reward]]):
        terms = list(terms)
        if not terms:
            raise ValueError("WeightedReward needs at least one (weight, reward) term")
        for i, term in enumerate(terms):
            if not (isinstance(term, tuple) and len(term) == 2 and callable(term[1])):
                raise ValueError(f"term {i} must be a (weight, reward) pair, got {term!r}")
        self.terms = [(float(w), r) for w, r in terms]

    def __repr__(self) -> str:
        return "WeightedReward([" + ", ".join(f"({w}, {r!r})" for w, r in self.terms) + "])"

    def components(self, images: Any, prompts: Sequence[str], metadata: Sequence[dict] | None) -> list[torch.Tensor]:
        """Each term's unweighted reward (for logging the parts of a mixed reward)."""
        return [torch.as_tensor(r(images, prompts, metadata), dtype=torch.float32).cpu() for _, r in self.terms]

    def __call__(self, images: Any, prompts: Sequence[str], metadata: Sequence[dict] | None = None) -> torch.Tensor:
        parts = self.components(images, prompts, metadata)
        total = torch.zeros_like(parts[0])
        for (weight, _), part in zip(self.terms, parts):
            if part.shape != total.shape:
                raise ValueError(f"reward terms disagree on batch shape: {tuple(part.shape)} vs {tuple(total.shape)}")
            total = total + weight * part
        return total


def build_reward(spec: str, device: str | None = None) -> Reward:
    """A reward from a spec string (see the module docstring); one plain term is returned as is."""
    from simplear.rewards.clip import ClipReward
    from simplear.rewards.shapes import ShapesReward

    if not spec or not spec.strip():
        raise ValueError("empty reward spec; use e.g. 'shapes', 'shapes:strict' or 'clip:PATH'")
    terms: list[tuple[float, Reward]] = []
    for raw in spec.split("+"):
        term = raw.strip()
        weight = 1.0
        if "*" in term:
            w, term = term.split("*", 1)
            try:
                weight = float(w)
            except ValueError:
                raise ValueError(f"reward weight {w!r} in {spec!r} is not a number") from None
        name, _, arg = term.strip().partition(":")
        if name == "shapes":
            reward: Reward = ShapesReward(mode=arg or "partial")
        elif name == "clip":
            if not arg:
                raise ValueError("the clip reward needs a folder: 'clip:PATH'")
            reward = ClipReward(arg, device=device)
        else:
            raise ValueError(f"unknown reward {name!r} in {spec!r}; known: shapes[:partial|strict|exact|exact-partial], clip:PATH")
        terms.append((weight, reward))
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    return WeightedReward(terms)
