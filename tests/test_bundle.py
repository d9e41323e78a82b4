"""Bundles: HF-loadable folders + simplear.json + visual tokenizer; released SimpleAR layout."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from simplear.bundle import Bundle, BundleConfig, load_bundle, make_bundle_config, save_bundle
from simplear.model import build_model
from simplear.visual_tokenizers import FSQAutoencoder, FSQAutoencoderConfig
from simplear.vocab import SIMPLEAR_UNCONDITIONAL_PROMPT, Vocabulary, train_text_tokenizer

CAPTIONS = ["a photo of two red circles", "a blue square left of a green star"]


def tiny_vt():
    torch.manual_seed(0)
    return FSQAutoencoder(FSQAutoencoderConfig(levels=(4, 4), downsample=4, channels=(8, 8, 8),
                                               res_blocks=(0, 0, 0), norm_groups=8))


@pytest.fixture(scope="module")
def bundle():
    tok = train_text_tokenizer(CAPTIONS * 3, vocab_size=290)
    vt = tiny_vt()
    vocab = Vocabulary(tok, vt.codebook_size)
    model = build_model("tiny", vocab.vocab_size, seed=0)
    return Bundle(model, vocab, vt, make_bundle_config(vocab, vt, 32, recipe="test"))


def test_round_trip(bundle, tmp_path):
    out = save_bundle(tmp_path / "b", bundle)
    data = json.loads((out / "simplear.json").read_text())
    for key in ("visual_tokenizer", "image_size", "grid", "visual_offset", "codebook_size",
                "prompt_template", "unconditional_prompt", "sampling"):
        assert key in data
    assert data["grid"] == [8, 8] and data["visual_tokenizer"] == {"kind": "fsq", "path": "visual_tokenizer"}
    assert set(data["sampling"]) >= {"cfg_scale", "temperature", "top_k", "top_p"}
    assert not list(out.glob("*.bin"))
    loaded = load_bundle(out, device="cpu")
    assert loaded.config == bundle.config
    assert loaded.vocab.visual_offset == bundle.vocab.visual_offset
    assert loaded.vocab.encode_prompt("two red circles") == bundle.vocab.encode_prompt("two red circles")
    ids = torch.tensor([bundle.vocab.encode_prompt("a red star")])
    assert torch.allclose(loaded.model(ids).logits, bundle.model(ids).logits, atol=1e-5)
    codes = torch.randint(0, 16, (1, 8, 8))
    assert torch.allclose(loaded.visual_tokenizer.decode(codes), bundle.visual_tokenizer.decode(codes), atol=1e-5)


def test_plain_hugging_face_tools_read_it(bundle, tmp_path):
    out = save_bundle(tmp_path / "b", bundle)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(tok) + 16


def test_half_precision_bundle_is_smaller_and_close(bundle, tmp_path):
    full = save_bundle(tmp_path / "full", bundle)
    half = save_bundle(tmp_path / "half", bundle, dtype=torch.bfloat16)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    assert bundle.model.dtype == torch.float32  # the in-memory model is untouched
    loaded = load_bundle(half, device="cpu")
    ids = torch.tensor([bundle.vocab.encode_prompt("a red star")])
    assert torch.allclose(loaded.model(ids).logits, bundle.model(ids).logits, atol=0.05)


def test_strict_errors(bundle, tmp_path):
    out = save_bundle(tmp_path / "b", bundle)
    broken = tmp_path / "nojson"
    shutil.copytree(out, broken)
    data = json.loads((broken / "simplear.json").read_text())
    del data["grid"]
    (broken / "simplear.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="grid"):
        load_bundle(broken, device="cpu")
    noweights = tmp_path / "noweights"
    shutil.copytree(out, noweights)
    (noweights / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_bundle(noweights, device="cpu")
    novt = tmp_path / "novt"
    shutil.copytree(out, novt)
    shutil.rmtree(novt / "visual_tokenizer")
    with pytest.raises(FileNotFoundError, match="visual tokenizer"):
        load_bundle(novt, device="cpu")
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path / "missing", device="cpu")
    # A visual tokenizer with another codebook is refused.
    other = FSQAutoencoder(FSQAutoencoderConfig(levels=(4, 4, 2), downsample=4, channels=(8, 8, 8),
                                                res_blocks=(0, 0, 0), norm_groups=8))
    with pytest.raises(ValueError, match="codes"):
        load_bundle(out, visual_tokenizer=other, device="cpu")


def test_missing_weight_tensor_is_an_error(bundle, tmp_path):
    from safetensors.torch import load_file, save_file

    out = save_bundle(tmp_path / "b", bundle)
    state = load_file(str(out / "model.safetensors"))
    state.pop(next(k for k in state if "mlp" in k))
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="strict loading"):
        load_bundle(out, device="cpu")


class FakeCosmos:
    """Stands in for the Cosmos DV8x16x16 tokenizer: 64,000 codes, 16x downsampling."""

    kind, codebook_size, downsample = "cosmos", 64000, 16

    def to(self, device):
        return self


def released_simplear_folder(path):
    """A folder with the exact layout of Daniel0724/SimpleAR-0.5B-RL, tiny and random."""
    tok = train_text_tokenizer(CAPTIONS * 3 + ["A highly realistic image of"], vocab_size=300)
    model = build_model("tiny", len(tok) + 64000, seed=1)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    # A chat model's generation config, as the released folders carry.
    GenerationConfig(repetition_penalty=1.05, top_k=20, top_p=0.8, temperature=0.7, do_sample=True).save_pretrained(path)
    return tok


def test_released_simplear_folder(tmp_path):
    tok = released_simplear_folder(tmp_path)
    with pytest.raises(ValueError, match="visual_tokenizer"):
        load_bundle(tmp_path, device="cpu")
    b = load_bundle(tmp_path, visual_tokenizer=FakeCosmos(), device="cpu")
    assert b.vocab.visual_offset == len(tok)
    assert b.config.prompt_template == "<|t2i|>A highly realistic image of {prompt}<|soi|>"
    assert b.config.unconditional_prompt == SIMPLEAR_UNCONDITIONAL_PROMPT
    assert b.config.unconditional_prompt.startswith("<|t2i|>An image of aerial view, overexposed")
    assert b.config.image_size == 1024 and b.config.grid == (64, 64)
    assert (b.config.sampling.cfg_scale, b.config.sampling.temperature) == (6.0, 1.0)
    assert b.config.sampling.top_k is None and b.config.sampling["top_p"] is None
    # The chat generation config is kept aside, never applied.
    assert b.checkpoint_generation_config.repetition_penalty == 1.05
    assert b.model.generation_config.repetition_penalty in (None, 1.0)
    assert b.vocab.decode_text(b.vocab.encode_prompt("a cat")) == "<|t2i|>A highly realistic image of a cat<|soi|>"


def test_released_folder_with_wrong_vocab_size(tmp_path):
    tok = train_text_tokenizer(CAPTIONS, vocab_size=290)
    build_model("tiny", len(tok) + 63999, seed=1).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="vocab_size"):
        load_bundle(tmp_path, visual_tokenizer=FakeCosmos(), device="cpu")


def test_config_from_dict_reports_missing_keys():
    with pytest.raises(ValueError, match="sampling"):
        BundleConfig.from_dict({"visual_tokenizer": {"kind": "fsq", "path": "x"}, "image_size": 32})
