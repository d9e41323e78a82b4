"""The unified vocabulary: text tokens, SimpleAR's special tokens, and visual codes in one id space.

SimpleAR (arXiv 2504.11455) appends the visual tokenizer's codebook after the text vocabulary:
a visual code `c` is the token id `len(text_tokenizer) + c`, where the length is taken *after*
the special tokens (`<|t2i|>`, `<|soi|>`, ...) were added. This module is the only place in the
package that knows this offset, the prompt template and the unconditional prompt; every other
module (trainer, samplers, pipeline, server) asks a `Vocabulary`.

What it is not: a tokenizer implementation. Text is tokenized by a Hugging Face tokenizer (the
Qwen2.5 one for released checkpoints, or a small BPE trained here on captions for our models).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# SimpleAR's added special tokens, in the order its released tokenizer lists them.
SIMPLEAR_SPECIAL_TOKENS = ("<|t2i|>", "<|i2t|>", "<|soi|>", "<|vtokens|>", "<|t2v|>", "<|v2t|>", "<|sov|>")
T2I, SOI = "<|t2i|>", "<|soi|>"
# Qwen's end-of-text doubles as the padding token, as in the Qwen2.5 tokenizer.
PAD_TOKEN = "<|endoftext|>"

# Templates for our own (ShapesWorld) models: the caption goes between the task and image markers.
DEFAULT_PROMPT_TEMPLATE = "<|t2i|>{prompt}<|soi|>"
# Training drops the caption with probability p, leaving exactly this: the CFG branch it learns.
DEFAULT_UNCONDITIONAL_PROMPT = "<|t2i|><|soi|>"
DEFAULT_NEGATIVE_TEMPLATE = "<|t2i|>{prompt}<|soi|>"

# SimpleAR's own generate.py settings, used for released checkpoints that carry no simplear.json.
SIMPLEAR_PROMPT_TEMPLATE = "<|t2i|>A highly realistic image of {prompt}<|soi|>"
SIMPLEAR_NEGATIVE_TEMPLATE = "<|t2i|>An image of {prompt}<|soi|>"
SIMPLEAR_NEGATIVE_PROMPT = (
    "aerial view, overexposed, low quality, deformation, a poor composition, "
    "bad hands, bad teeth, bad eyes, bad limbs, distortion"
)
SIMPLEAR_UNCONDITIONAL_PROMPT = SIMPLEAR_NEGATIVE_TEMPLATE.format(prompt=SIMPLEAR_NEGATIVE_PROMPT)
SIMPLEAR_CODEBOOK_SIZE = 64000


class Vocabulary:
    """Maps prompts and visual codes to unified token ids and back.

    `text_tokenizer` is a Hugging Face tokenizer that already holds `<|t2i|>` and `<|soi|>`;
    `codebook_size` is the visual tokenizer's number of codes. Templates contain `{prompt}`.
    """

    def __init__(
        self,
        text_tokenizer: Any,
        codebook_size: int,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        unconditional_prompt: str = DEFAULT_UNCONDITIONAL_PROMPT,
        negative_template: str = DEFAULT_NEGATIVE_TEMPLATE,
    ) -> None:
        if int(codebook_size) <= 0:
            raise ValueError(f"codebook_size must be positive, got {codebook_size}")
        for name, template in (("prompt_template", prompt_template), ("negative_template", negative_template)):
            if template.count("{prompt}") != 1:
                raise ValueError(f"{name} must contain '{{prompt}}' exactly once, got {template!r}")
        vocab = text_tokenizer.get_vocab()
        missing = [t for t in (T2I, SOI) if t not in vocab]
        if missing:
            raise ValueError(
                f"the text tokenizer lacks SimpleAR's special tokens {missing}; train one with "
                "simplear.vocab.train_text_tokenizer or add them with add_special_tokens()"
            )
        self.text_tokenizer = text_tokenizer
        self.codebook_size = int(codebook_size)
        self.prompt_template = prompt_template
        self.unconditional_prompt = unconditional_prompt
        self.negative_template = negative_template
        # len() counts added tokens; this is SimpleAR's offset convention.
        self.visual_offset = len(text_tokenizer)
        self.vocab_size = self.visual_offset + self.codebook_size
        self.special_token_ids = {t: vocab[t] for t in SIMPLEAR_SPECIAL_TOKENS if t in vocab}
        self.soi_id = vocab[SOI]
        self.t2i_id = vocab[T2I]
        self._specials = tuple(text_tokenizer.all_special_tokens) + tuple(self.special_token_ids)

    # ---- text side -------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        """Padding id: the tokenizer's pad token, else its end-of-text, else `<|soi|>`'s id."""
        tok = self.text_tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, tok.get_vocab().get(PAD_TOKEN)):
            if candidate is not None:
                return int(candidate)
        return self.soi_id

    def _encode_text(self, text: str) -> list[int]:
        # add_special_tokens=False: the template carries every marker; no BOS/EOS is wanted.
        return list(self.text_tokenizer(text, add_special_tokens=False)["input_ids"])

    def _check_user_text(self, prompt: str, what: str) -> str:
        if not isinstance(prompt, str):
            raise ValueError(f"{what} must be a string, got {type(prompt).__name__}")
        # A marker inside user text would silently change the sequence structure.
        for special in self._specials:
            if special and special in prompt:
                raise ValueError(f"{what} {prompt!r} contains the special token {special!r}")
        return prompt

    def format_prompt(self, prompt: str) -> str:
        return self.prompt_template.format(prompt=self._check_user_text(prompt, "prompt"))

    def encode_prompt(self, prompt: str) -> list[int]:
        """Ids of the conditional branch: the template applied to `prompt`, ending in `<|soi|>`."""
        return self._encode_text(self.format_prompt(prompt))

    def encode_unconditional(self) -> list[int]:
        """Ids of the unconditional (CFG) branch: the full `unconditional_prompt` text."""
        return self._encode_text(self.unconditional_prompt)

    def encode_negative(self, negative_prompt: str | None) -> list[int]:
        """Ids of a user negative prompt (`None` or "" gives the default unconditional branch)."""
        if not negative_prompt:
            return self.encode_unconditional()
        text = self._check_user_text(negative_prompt, "negative prompt")
        return self._encode_text(self.negative_template.format(prompt=text))

    def decode_text(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) < self.visual_offset]
        return self.text_tokenizer.decode(ids, skip_special_tokens=False)

    def max_prompt_tokens(self, context: int, num_image_tokens: int) -> int:
        """How many prompt ids fit before `num_image_tokens` codes in a `context`-long window."""
        room = int(context) - int(num_image_tokens)
        if room <= 0:
            raise ValueError(
                f"a context of {context} tokens cannot hold {num_image_tokens} image tokens and a prompt"
            )
        return room

    # ---- visual side -----------------------------------------------------------------------
    @property
    def visual_slice(self) -> slice:
        """The slice of unified ids (and of logits' last dim) that are visual codes."""
        return slice(self.visual_offset, self.vocab_size)

    def is_visual(self, ids):
        return (ids >= self.visual_offset) & (ids < self.vocab_size)

    def codes_to_ids(self, codes):
        """Visual codes (tensor, array or list) -> unified ids of the same kind; checks the range."""
        if isinstance(codes, (list, tuple)):
            return [int(i) for i in self.codes_to_ids(_as_array(codes)).tolist()]
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= self.codebook_size:
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got values in [{lo}, {hi}]")
        return _to_long(codes) + self.visual_offset

    def ids_to_codes(self, ids):
        """Unified ids -> visual codes; raises if any id is a text token or beyond the vocabulary."""
        if isinstance(ids, (list, tuple)):
            return [int(i) for i in self.ids_to_codes(_as_array(ids)).tolist()]
        lo, hi = int(ids.min()), int(ids.max())
        if lo < self.visual_offset or hi >= self.vocab_size:
            raise ValueError(
                f"ids must be visual tokens in [{self.visual_offset}, {self.vocab_size}), "
                f"got values in [{lo}, {hi}]: a text token inside an image is a sampler bug"
            )
        return _to_long(ids) - self.visual_offset

    def __repr__(self) -> str:
        return (
            f"Vocabulary(text={self.visual_offset}, codebook_size={self.codebook_size}, "
            f"vocab_size={self.vocab_size}, prompt_template={self.prompt_template!r})"
        )


def _as_array(values: Sequence[int]):
    import numpy as np

    if len(values) == 0:
        raise ValueError("expected at least one id or code")
    return np.asarray(values, dtype=np.int64)


def _to_long(values):
    import numpy as np

    if isinstance(values, np.ndarray):
        return values.astype(np.int64)
    return values.long()


def train_text_tokenizer(captions: Iterable[str], vocab_size: int = 512):
    """Train a small byte-level BPE on `captions`; returns a `PreTrainedTokenizerFast`.

    Byte-level so any prompt encodes (no unknown tokens); SimpleAR's special tokens and Qwen's
    `<|endoftext|>` (our pad) are added as special tokens. `save_pretrained(dir)` writes a
    `tokenizer.json` that `AutoTokenizer.from_pretrained(dir)` loads.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD_TOKEN, *SIMPLEAR_SPECIAL_TOKENS]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(specials):
        raise ValueError(f"vocab_size must be at least {len(alphabet) + len(specials)} for a byte-level BPE")
    captions = [c for c in captions if isinstance(c, str) and c]
    if not captions:
        raise ValueError("train_text_tokenizer needs at least one non-empty caption")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(captions, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=PAD_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(SIMPLEAR_SPECIAL_TOKENS),
        clean_up_tokenization_spaces=False,
    )


def add_simplear_special_tokens(text_tokenizer) -> int:
    """Add SimpleAR's special tokens to an existing (e.g. Qwen2.5) tokenizer; returns how many were new."""
    vocab = text_tokenizer.get_vocab()
    new = [t for t in SIMPLEAR_SPECIAL_TOKENS if t not in vocab]
    if new:
        text_tokenizer.add_tokens(new, special_tokens=True)
    return len(new)
