"""Training sequences: prompt template + caption, then the image codes, in raster order.

`<|t2i|>` + caption + `<|soi|>` + codes (the Vocabulary owns the template). As SimpleAR does, one
of an image's captions (short or long) is picked at random and the caption is dropped with
probability p (0.1), leaving the unconditional prompt, so classifier-free guidance has an
unconditional branch to use at sampling time.

Every random choice for the sample at global position `p` comes from a generator seeded with
(seed, p), never from a process-global RNG. So the batch at a step is the same whether the run
is resumed, split across DDP ranks or run in one process: that is what makes `--resume` and the
1-vs-2-process test exact. Padding is on the right; pads come after every real token and carry
no targets, so causal attention needs no mask.

With `input_noise` p > 0, each image code fed as an input is swapped, with probability p, for
another code drawn uniformly (seeded by the position like the caption choice); the targets stay
the true codes. A sampled image's codes are the model's own, not the tokenizer's, and a model that
has only ever continued clean codes may read its own off-grid ones wrongly (exposure bias); the
noise trains it to continue from imperfect prefixes. (On ShapesWorld p = 0.1 scored lower, and
the model's duplicated objects did not come from its codes: docs/benchmarks.md.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from simplear.vocab import Vocabulary

IGNORE = -100


class InMemoryTokenDataset(torch.utils.data.Dataset):
    """Codes (N x h x w) and captions (one list per image) held in memory; the item shape of
    `TokenShardDataset`, for tests and small programmatic runs."""

    def __init__(self, codes: torch.Tensor | np.ndarray, captions: Sequence[Sequence[str]]):
        codes = torch.as_tensor(np.asarray(codes)).long()
        if codes.ndim != 3:
            raise ValueError(f"codes must be N x h x w, got shape {tuple(codes.shape)}")
        if len(captions) != codes.shape[0]:
            raise ValueError(f"{codes.shape[0]} code grids but {len(captions)} caption lists")
        self.codes = codes
        self.captions = [list(c) for c in captions]

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"codes": self.codes[index], "captions": self.captions[index]}


class SampleOrder:
    """Global sample position -> dataset index: a fresh seeded permutation every epoch."""

    def __init__(self, num_items: int, seed: int):
        if num_items <= 0:
            raise ValueError("the training dataset is empty")
        self.num_items, self.seed = num_items, seed
        self._epoch, self._perm = -1, None

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_items)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.num_items, generator=g), epoch
        return int(self._perm[offset])


@dataclass
class Batch:
    input_ids: torch.Tensor  # long B x T, right-padded
    targets: torch.Tensor  # long B x T: the id to predict at each position, IGNORE where none
    image_mask: torch.Tensor  # bool B x T: targets that are image tokens (the loss SimpleAR uses)

    def to(self, device) -> Batch:
        return Batch(self.input_ids.to(device), self.targets.to(device), self.image_mask.to(device))

    @property
    def num_tokens(self) -> int:
        """Real (non-pad) input tokens: what tokens/s counts."""
        return int((self.targets != IGNORE).sum()) + self.input_ids.shape[0]


class SequenceBuilder:
    """Turns dataset items at given global positions into a padded training batch."""

    def __init__(self, vocab: Vocabulary, context: int, caption_dropout: float = 0.1,
                 caption_choice: str = "random", seed: int = 0, input_noise: float = 0.0):
        if not 0.0 <= input_noise < 1.0:
            raise ValueError(f"input_noise must be in [0, 1), got {input_noise}")
        self.vocab, self.context = vocab, int(context)
        self.input_noise = float(input_noise)
        self.caption_dropout, self.caption_choice, self.seed = caption_dropout, caption_choice, seed
        self._uncond = vocab.encode_unconditional()
        self._encode = lru_cache(maxsize=200_000)(vocab.encode_prompt)

    def prompt_ids(self, captions: Sequence[str], position: int) -> list[int]:
        if not captions:
            raise ValueError(f"the sample at position {position} has no captions")
        rng = np.random.default_rng([self.seed, position])
        dropped = rng.random() < self.caption_dropout
        pick = int(rng.integers(len(captions))) if self.caption_choice == "random" else 0
        return self._uncond if dropped else self._encode(captions[pick])

    def noisy_inputs(self, codes: torch.Tensor, position: int) -> torch.Tensor:
        """`codes` (flat) with each one swapped for a different uniform code with p = input_noise."""
        size = self.vocab.codebook_size
        if self.input_noise <= 0 or size < 2:
            return codes
        rng = np.random.default_rng([self.seed, position, 1])  # a stream apart from the caption choice's
        swap = torch.from_numpy(rng.random(codes.numel()) < self.input_noise)
        other = torch.from_numpy(rng.integers(0, size - 1, codes.numel()))
        other = other + (other >= codes).long()  # never the code itself
        return torch.where(swap, other, codes)

    def build(self, items: Sequence[dict], positions: Sequence[int]) -> Batch:
        rows = []
        for item, position in zip(items, positions):
            prompt = self.prompt_ids(item["captions"], position)
            codes = torch.as_tensor(item["codes"]).reshape(-1).long()
            prompt_ids = torch.tensor(prompt, dtype=torch.long)
            seq = torch.cat([prompt_ids, self.vocab.codes_to_ids(codes)])
            if seq.numel() > self.context:
                raise ValueError(f"sequence of {seq.numel()} tokens (prompt {len(prompt)} + image {codes.numel()}) "
                                 f"exceeds the context of {self.context}")
            inputs = seq
            if self.input_noise > 0:
                inputs = torch.cat([prompt_ids, self.vocab.codes_to_ids(self.noisy_inputs(codes, position))])
            rows.append((seq, inputs, len(prompt)))
        length = max(seq.numel() for seq, _, _ in rows) - 1
        b = len(rows)
        input_ids = torch.full((b, length), self.vocab.pad_id, dtype=torch.long)
        targets = torch.full((b, length), IGNORE, dtype=torch.long)
        image_mask = torch.zeros((b, length), dtype=torch.bool)
        for i, (seq, inputs, n_prompt) in enumerate(rows):
            n = seq.numel() - 1
            input_ids[i, :n] = inputs[:-1]
            targets[i, :n] = seq[1:]
            # Position n_prompt - 1 (the <|soi|> token) predicts the first code.
            image_mask[i, n_prompt - 1:n] = True
        return Batch(input_ids, targets, image_mask)


def check_captions(captions: Iterable[Sequence[str]], vocab: Vocabulary, context: int,
                   num_image_tokens: int) -> int:
    """Raise before training if any caption cannot fit beside the image; returns the longest prompt."""
    room = vocab.max_prompt_tokens(context, num_image_tokens)
    longest = len(vocab.encode_unconditional())
    seen: set[str] = set()  # generated captions repeat a lot (ShapesWorld's: 3-4 times each)
    for index, caps in enumerate(captions):
        if not caps:
            raise ValueError(f"training sample {index} has no captions")
        for caption in caps:
            if caption in seen:
                continue
            seen.add(caption)
            n = len(vocab.encode_prompt(caption))
            if n > room:
                raise ValueError(
                    f"caption of sample {index} is {n} tokens with the template, but only {room} fit in a "
                    f"context of {context} beside {num_image_tokens} image tokens: {caption[:80]!r}... "
                    "(raise model.context or shorten the captions)"
                )
            longest = max(longest, n)
    return longest
