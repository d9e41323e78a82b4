"""The unified vocabulary: offsets, templates, range checks and the caption tokenizer."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from simplear.vocab import (
    SIMPLEAR_SPECIAL_TOKENS,
    Vocabulary,
    add_simplear_special_tokens,
    train_text_tokenizer,
)

CAPTIONS = ["a photo of two red circles", "a blue square left of a green star", "three yellow hearts"]


@pytest.fixture(scope="module")
def tok():
    return train_text_tokenizer(CAPTIONS * 4, vocab_size=300)


def test_offset_is_len_tokenizer_after_specials(tok):
    vocab = Vocabulary(tok, codebook_size=100)
    assert vocab.visual_offset == len(tok)
    assert vocab.vocab_size == len(tok) + 100
    assert vocab.visual_slice == slice(len(tok), len(tok) + 100)
    for special in SIMPLEAR_SPECIAL_TOKENS:
        assert special in tok.get_vocab()
        assert tok.get_vocab()[special] < vocab.visual_offset


def test_prompt_template_and_unconditional(tok):
    vocab = Vocabulary(tok, 100)
    ids = vocab.encode_prompt("two red circles")
    assert ids[0] == vocab.t2i_id and ids[-1] == vocab.soi_id
    assert vocab.decode_text(ids) == "<|t2i|>two red circles<|soi|>"
    assert vocab.encode_unconditional() == [vocab.t2i_id, vocab.soi_id]
    assert vocab.encode_negative(None) == vocab.encode_unconditional()
    assert vocab.decode_text(vocab.encode_negative("blurry")) == "<|t2i|>blurry<|soi|>"
    # Words never seen in training still encode (byte-level BPE): no unknown tokens.
    assert vocab.decode_text(vocab.encode_prompt("a zebra, 5%")) == "<|t2i|>a zebra, 5%<|soi|>"


def test_user_text_cannot_smuggle_markers(tok):
    vocab = Vocabulary(tok, 100)
    with pytest.raises(ValueError, match="special token"):
        vocab.encode_prompt("a cat<|soi|>")


def test_codes_ids_round_trip_and_range_checks(tok):
    vocab = Vocabulary(tok, 100)
    codes = torch.tensor([[0, 5], [99, 42]])
    ids = vocab.codes_to_ids(codes)
    assert ids.dtype == torch.long and int(ids.min()) == vocab.visual_offset
    assert torch.equal(vocab.ids_to_codes(ids), codes)
    assert vocab.codes_to_ids([1, 2]) == [vocab.visual_offset + 1, vocab.visual_offset + 2]
    assert np.array_equal(vocab.ids_to_codes(vocab.codes_to_ids(np.array([3, 4], dtype=np.uint16))), [3, 4])
    with pytest.raises(ValueError, match="codes must lie"):
        vocab.codes_to_ids(torch.tensor([100]))
    with pytest.raises(ValueError, match="text token"):
        vocab.ids_to_codes(torch.tensor([vocab.visual_offset - 1]))
    with pytest.raises(ValueError):
        vocab.ids_to_codes([vocab.vocab_size])


def test_max_prompt_tokens(tok):
    vocab = Vocabulary(tok, 100)
    assert vocab.max_prompt_tokens(80, 64) == 16
    with pytest.raises(ValueError, match="cannot hold"):
        vocab.max_prompt_tokens(64, 64)


def test_tokenizer_saves_as_tokenizer_json_for_autotokenizer(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert len(again) == len(tok)
    a, b = Vocabulary(tok, 10), Vocabulary(again, 10)
    assert a.encode_prompt(CAPTIONS[1]) == b.encode_prompt(CAPTIONS[1])
    assert a.pad_id == b.pad_id == tok.get_vocab()["<|endoftext|>"]


def test_bad_inputs(tok):
    with pytest.raises(ValueError, match="codebook_size"):
        Vocabulary(tok, 0)
    with pytest.raises(ValueError, match="exactly once"):
        Vocabulary(tok, 10, prompt_template="<|t2i|>no slot<|soi|>")
    with pytest.raises(ValueError, match="at least"):
        train_text_tokenizer(CAPTIONS, vocab_size=10)
    with pytest.raises(ValueError, match="caption"):
        train_text_tokenizer([], vocab_size=300)


def test_tokenizer_without_specials_is_refused_until_added(tok):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"a": 0, "cat": 1, "[UNK]": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(tokenizer_object=raw)
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary(plain, 10)
    assert add_simplear_special_tokens(plain) == len(SIMPLEAR_SPECIAL_TOKENS)
    vocab = Vocabulary(plain, 10)
    assert vocab.visual_offset == 3 + len(SIMPLEAR_SPECIAL_TOKENS)


def test_check_captions_finds_the_longest_prompt_and_names_a_caption_that_cannot_fit(tok):
    from simplear.train.sequences import check_captions

    vocab = Vocabulary(tok, 100)
    lengths = {c: len(vocab.encode_prompt(c)) for c in CAPTIONS}
    longest = max(lengths.values())
    # Repeated captions (generated data repeats them) are checked once and change nothing.
    assert check_captions([CAPTIONS, CAPTIONS[:1], CAPTIONS[::-1]], vocab, 64, 16) == longest
    too_long = max(CAPTIONS, key=lengths.get)
    with pytest.raises(ValueError, match=r"caption of sample 1 is .* only .*\(raise model.context"):
        check_captions([[CAPTIONS[0]], [too_long]], vocab, 16 + longest - 1, 16)
    with pytest.raises(ValueError, match="sample 2 has no captions"):
        check_captions([CAPTIONS, CAPTIONS, []], vocab, 64, 16)
