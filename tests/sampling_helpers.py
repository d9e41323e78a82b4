"""Tiny models and exact distributions shared by the sampling, engine and Jacobi tests."""

from __future__ import annotations

import itertools

import pytest
import torch

from simplear.model import build_model
from simplear.sampling.config import SamplingConfig
from simplear.sampling.logits import cfg_combine, probs_from_logits, visual_logits

OFFSET = 16  # ids [0, 16) play the text vocabulary
CODEBOOK = 4  # a small codebook so the joint law of a few codes can be enumerated
COND = [[1, 2, 3], [4, 5, 6, 7, 8]]
UNCOND = [[9], [10, 11]]


def tiny_model(codebook: int = CODEBOOK, seed: int = 0, init: float = 0.15):
    """A 2-layer Qwen2 whose logits are peaked enough for the statistical tests to have power."""
    model = build_model("tiny", OFFSET + codebook, seed=seed, initializer_range=init)
    return model.eval()


@torch.no_grad()
def exact_joint(model, cond, uncond, config: SamplingConfig, depth: int, codebook: int = CODEBOOK):
    """The exact probability of every code sequence of length `depth`, by enumeration.

    One batched forward per branch and depth: all prefixes of one length share a shape.
    """
    step_probs = []
    for t in range(depth):
        prefixes = [[OFFSET + c for c in seq] for seq in itertools.product(range(codebook), repeat=t)]
        logits = visual_logits(model(torch.tensor([cond + p for p in prefixes])).logits[:, -1], OFFSET, codebook)
        if config.uses_cfg:
            u_logits = model(torch.tensor([uncond + p for p in prefixes])).logits[:, -1]
            logits = cfg_combine(logits, visual_logits(u_logits, OFFSET, codebook), config.cfg_scale)
        step_probs.append(probs_from_logits(logits, config))
    joint = {}
    for seq in itertools.product(range(codebook), repeat=depth):
        prob = 1.0
        for t in range(depth):
            row = sum(c * codebook ** (t - 1 - i) for i, c in enumerate(seq[:t]))
            prob *= float(step_probs[t][row, seq[t]])
        joint[seq] = prob
    return joint


def chi_square_pvalue(codes: torch.Tensor, joint: dict) -> tuple[float, float]:
    """(p-value of Pearson's chi-square test, total variation) of the sampled prefixes vs `joint`."""
    from scipy.stats import chisquare

    depth = len(next(iter(joint)))
    counts = {key: 0 for key in joint}
    for row in codes[:, :depth].tolist():
        counts[tuple(row)] += 1
    n = codes.shape[0]
    keys = [k for k in joint if joint[k] * n >= 1e-9]
    observed = [counts[k] for k in keys]
    expected = [joint[k] * n for k in keys]
    scale = sum(observed) / sum(expected)
    result = chisquare(observed, [e * scale for e in expected])
    tv = 0.5 * sum(abs(counts[k] / n - joint[k]) for k in joint)
    return float(result.pvalue), tv


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread: on a busy 2-core box two threads spin-wait on each other every op."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
