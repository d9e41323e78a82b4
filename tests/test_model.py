"""Model presets, stock class, from-Qwen initialisation with mean rows."""

import pytest
import torch
from transformers import Qwen2ForCausalLM

from simplear.model import (
    PRESETS,
    build_model,
    count_parameters,
    flops_per_token,
    init_from_qwen,
    model_config,
)


def test_presets_are_stock_qwen2():
    for name in PRESETS:
        config = model_config(name, 1000)
        assert config.vocab_size == 1000 and config.architectures == ["Qwen2ForCausalLM"]
    model = build_model("tiny", 500, seed=0)
    assert type(model) is Qwen2ForCausalLM
    out = model(torch.randint(0, 500, (2, 7)))
    assert out.logits.shape == (2, 7, 500)


def test_preset_sizes():
    # The 0.5B preset matches Qwen2.5-0.5B's shape with SimpleAR's vocabulary.
    c = model_config("simplear-0.5b", 151672 + 64000)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (896, 24, 14, 2)
    shapes = build_model("shapes", 300 + 4096)
    assert 2_000_000 < count_parameters(shapes, embeddings=False) < 6_000_000
    assert flops_per_token(shapes.config, 100, loss_rows=4096) > 6 * count_parameters(shapes, embeddings=False)


def test_seeded_build_is_deterministic():
    a, b = build_model("tiny", 100, seed=3), build_model("tiny", 100, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model("huge", 10)


@pytest.mark.parametrize("tied", [True, False])
def test_init_from_qwen_mean_rows(tmp_path, tied):
    base = build_model("tiny", 50, seed=0, tie_word_embeddings=tied)
    base.save_pretrained(tmp_path)
    grown = init_from_qwen(tmp_path, 80)
    emb = grown.get_input_embeddings().weight
    old = base.get_input_embeddings().weight
    assert emb.shape == (80, 32) and grown.config.vocab_size == 80
    assert torch.allclose(emb[:50], old)
    assert torch.allclose(emb[50:], old.mean(0).expand(30, -1))
    if not tied:
        head = grown.get_output_embeddings().weight
        assert torch.allclose(head[60], base.get_output_embeddings().weight.mean(0))
    # Trimming (Qwen pads its matrix) keeps the first rows.
    assert init_from_qwen(tmp_path, 40).get_input_embeddings().weight.shape[0] == 40


def test_init_from_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        init_from_qwen(tmp_path, 10)
