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
    init_visual_rows,
    model_config,
    visual_code_vectors,
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


class _Levels:
    """A tokenizer that only names its FSQ levels (as a Cosmos folder's would)."""

    def __init__(self, levels, codebook_size):
        self.levels, self.codebook_size = levels, codebook_size


def _mean_cos(rows, pairs):
    a, b = rows[[i for i, _ in pairs]], rows[[j for _, j in pairs]]
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).mean().item()


@pytest.mark.parametrize("tied", [True, False])
def test_fsq_visual_init_follows_the_code_grid(tied):
    from simplear.visual_tokenizers.autoencoder import FSQAutoencoder, FSQAutoencoderConfig

    vt = FSQAutoencoder(FSQAutoencoderConfig(levels=(8, 5), downsample=4, channels=(8, 8, 8),
                                             res_blocks=(0, 0, 0), norm_groups=8))
    z = visual_code_vectors(vt)
    assert z.shape == (40, 2) and z.min() == -1 and z.max() == 1
    assert torch.equal(z, visual_code_vectors(_Levels((8, 5), 40)))  # levels alone give the same grid
    offset = 60
    model = build_model("tiny", offset + 40, seed=0, tie_word_embeddings=tied, hidden_size=256)
    text_before = model.get_input_embeddings().weight[:offset].clone()
    init_visual_rows(model, offset, z, seed=0)
    rows = model.get_input_embeddings().weight[offset:].detach()
    assert torch.equal(model.get_input_embeddings().weight[:offset], text_before)  # text rows untouched
    assert torch.equal(model.get_output_embeddings().weight[offset:], rows)  # untied head: the same rows
    assert 0.7 * 0.02 < rows.std().item() < 1.3 * 0.02  # the stock init's scale
    assert len({tuple(r.tolist()) for r in rows}) == 40  # every code its own row
    # Codes one or two steps apart on one FSQ channel start closer than codes far apart on the grid.
    near = [(i, j) for i in range(40) for j in range(40) if (z[i] - z[j]).abs().sum() > 0
            and ((z[i] - z[j]).abs() > 0).sum() == 1 and (z[i] - z[j]).abs().max() <= 0.5]
    far = [(i, j) for i in range(40) for j in range(40) if (z[i] - z[j]).abs().min() >= 1.0]
    assert near and far
    assert _mean_cos(rows, near) > 0.2 and _mean_cos(rows, far) < 0.05  # far: unrelated or opposed
    # structured=0 is the plain random init: no grid geometry left.
    init_visual_rows(model, offset, z, structured=0.0, seed=0)
    rows = model.get_input_embeddings().weight[offset:].detach()
    assert abs(_mean_cos(rows, near)) < 0.1 and abs(_mean_cos(rows, far)) < 0.1


def test_fsq_visual_init_bad_input():
    model = build_model("tiny", 30, seed=0)
    with pytest.raises(ValueError, match="FSQ visual tokenizer"):
        visual_code_vectors(type("NoLevels", (), {"codebook_size": 16})())
    with pytest.raises(ValueError, match="give 16 codes but the tokenizer has 20"):
        visual_code_vectors(_Levels((4, 4), 20))
    with pytest.raises(ValueError, match="do not fit"):
        init_visual_rows(model, 20, visual_code_vectors(_Levels((4, 4), 16)))
    with pytest.raises(ValueError, match="structured"):
        init_visual_rows(model, 10, visual_code_vectors(_Levels((4, 4), 16)), structured=1.5)
