"""Prompts for GRPO: the training pool, the evaluation suite, and which prompts each step uses.

Training prompts come from a JSONL of GenEval metadata lines, or by default from ShapesWorld's
metadata sampler, which never picks a held-out (colour, class) pair, so the held-out scores of
the evaluation suite keep measuring generalisation after RL. A step's prompts are a pure
function of (seed, step), so a resumed or multi-process run uses exactly the same ones.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simplear.train.grpo import GRPOConfig


def read_prompt_file(path: str | os.PathLike) -> list[dict]:
    """GenEval metadata lines (one JSON object with at least `prompt` per line)."""
    from simplear.eval.exports import read_prompt_file as read_lines

    return [line.data for line in read_lines(path)]


def training_prompts(config: GRPOConfig, pool_size: int = 4096) -> list[dict]:
    """The training prompt pool: a file, or random ShapesWorld lines that avoid held-out pairs.

    ShapesWorld lines come from `sample_metadata` (which never picks a held-out (colour, class)
    pair, so held-out scores stay a measure of generalisation) with the six tags equally likely,
    because GenEval's overall score weighs the tags equally, or in the mix `config.tag_weights` gives.
    """
    if config.prompts:
        return read_prompt_file(config.prompts)
    import numpy as np

    from simplear.data.captions import canonical_prompt
    from simplear.data.shapes import TAGS, ShapesConfig, sample_metadata

    mix = grpo_tag_weights(config.tag_weights)
    shapes_config = ShapesConfig(tag_weights=tuple((tag, mix[tag]) for tag in TAGS))
    rng = np.random.default_rng(config.seed + 1)
    pool = []
    for _ in range(pool_size):
        line = sample_metadata(rng, shapes_config)
        pool.append({**line, "prompt": canonical_prompt(line)})
    return pool


def grpo_tag_weights(text: str) -> dict[str, float]:
    """GRPO's ShapesWorld prompt mix: `TAG=W,...` over equal weights for GenEval's six tags."""
    from simplear.data.shapes import TAGS, parse_tag_weights

    equal = dict.fromkeys(TAGS, 1.0)
    return parse_tag_weights(text, equal) if text else equal


def evaluation_prompts(config: GRPOConfig) -> list[dict]:
    if config.eval_prompts:
        items = read_prompt_file(config.eval_prompts)
    else:
        from simplear.eval.suite import make_suite

        items = make_suite(seed=0)
    from simplear.train.suite_eval import spread

    return spread(items, config.eval_num_prompts)


def prompts_for_step(pool: Sequence[dict], step: int, count: int, seed: int) -> list[dict]:
    """`count` prompts for `step`, a pure function of (seed, step): a resumed run picks the same."""
    rng = random.Random(seed * 1_000_003 + step)
    return [pool[rng.randrange(len(pool))] for _ in range(count)]
