"""Rewards for GRPO: plain callables `reward(images, prompts, metadata) -> torch.Tensor[B]`.

- `ShapesReward(mode="partial"|"strict")`: the ShapesWorld judge (verifiable, exact).
- `ClipReward(path, device=None)`: CLIP image–text cosine similarity from a Hugging Face folder.
- `WeightedReward([(w, reward), ...])`: weighted sums; `build_reward(spec)` parses
  `"0.8*shapes+0.2*clip:PATH"`.

Importing this package imports torch; `simplear` itself stays light because nothing imports
`simplear.rewards` at package import time.
"""

from simplear.rewards.base import Reward, to_pil_list
from simplear.rewards.clip import ClipPreprocess, ClipReward
from simplear.rewards.combine import WeightedReward, build_reward
from simplear.rewards.shapes import ShapesReward

__all__ = [
    "ClipPreprocess",
    "ClipReward",
    "Reward",
    "ShapesReward",
    "WeightedReward",
    "build_reward",
    "to_pil_list",
]
