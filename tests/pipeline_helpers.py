"""A tiny random bundle on disk for the Pipeline and `simplear generate` tests."""

from __future__ import annotations

import torch

from simplear.bundle import Bundle, SamplingDefaults, make_bundle_config, save_bundle
from simplear.model import build_model
from simplear.visual_tokenizers import FSQAutoencoder, FSQAutoencoderConfig
from simplear.vocab import train_text_tokenizer

CAPTIONS = ["a photo of two red circles", "a blue square left of a green star", "three yellow hearts"]


def make_tiny_bundle(folder, image_size: int = 16):
    """Text tokenizer + 16-code FSQ (4x downsampling) + 2-layer Qwen2, saved as a bundle."""
    from simplear.vocab import Vocabulary

    torch.manual_seed(0)
    vt = FSQAutoencoder(FSQAutoencoderConfig(levels=(4, 4), downsample=4, channels=(8, 8, 8),
                                             res_blocks=(0, 0, 0), norm_groups=8))
    tok = train_text_tokenizer(CAPTIONS * 3, vocab_size=290)
    vocab = Vocabulary(tok, vt.codebook_size)
    model = build_model("tiny", vocab.vocab_size, seed=0, max_position_embeddings=96,
                        initializer_range=0.3)  # peaked logits: prompts and CFG visibly matter
    config = make_bundle_config(vocab, vt, image_size, sampling=SamplingDefaults(cfg_scale=3.0))
    return save_bundle(folder, Bundle(model, vocab, vt, config))
