"""Visual tokenizers: FSQ math, our autoencoder, the Cosmos loader on TorchScript stand-ins, images."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from simplear.visual_tokenizers import (
    FSQ,
    CosmosTokenizer,
    FSQAutoencoder,
    FSQAutoencoderConfig,
    load_visual_tokenizer,
    pil_to_tensor,
    tensor_to_pil,
    tokenizer_identity,
)

TINY = FSQAutoencoderConfig(levels=(5, 4, 3), downsample=8, channels=(8, 8, 8, 8), res_blocks=(0, 0, 0, 1))


# --- FSQ ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (8, 8, 8, 5, 5, 5), (2, 3, 4)])
def test_fsq_codes_roundtrip_and_codebook(levels):
    fsq = FSQ(levels)
    assert fsq.codebook_size == int(np.prod(levels))
    z = torch.randn(3, len(levels), 5, 7, generator=torch.Generator().manual_seed(0)) * 4
    zq, codes = fsq(z)
    assert codes.shape == (3, 5, 7) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < fsq.codebook_size
    assert torch.equal(fsq.quantized_from_codes(codes), zq)
    # Every code maps back to itself: the implicit codebook is a bijection.
    all_codes = torch.arange(fsq.codebook_size).view(1, 1, -1)
    assert torch.equal(fsq.codes_from_quantized(fsq.quantized_from_codes(all_codes)), all_codes)


def test_fsq_each_channel_takes_exactly_its_levels():
    fsq = FSQ((8, 5, 2))
    z = torch.linspace(-30, 30, 2001).view(1, 1, -1, 1).expand(1, 3, -1, 1).contiguous()
    zq = fsq.quantize(z)
    assert [zq[0, c].unique().numel() for c in range(3)] == [8, 5, 2]
    assert zq.min() >= -1 and zq.max() <= 1


def test_fsq_straight_through_gradient():
    fsq = FSQ((5, 5))
    z = torch.zeros(1, 2, 1, 1, requires_grad=True)
    fsq.quantize(z).sum().backward()
    assert z.grad is not None and (z.grad > 0).all()  # rounding alone would give zero gradient


def test_fsq_rejects_bad_input():
    with pytest.raises(ValueError):
        FSQ([1, 5])
    fsq = FSQ((5, 5))
    with pytest.raises(ValueError, match="out of range"):
        fsq.quantized_from_codes(torch.tensor([[[25]]]))
    with pytest.raises(ValueError):
        fsq.quantize(torch.zeros(1, 3, 2, 2))


# --- our autoencoder -----------------------------------------------------------------------------


def test_autoencoder_fully_convolutional_and_save_load(tmp_path):
    torch.manual_seed(0)
    model = FSQAutoencoder(TINY).eval()
    for size in (64, 128):
        x = torch.rand(2, 3, size, size) * 2 - 1
        codes = model.encode(x)
        assert codes.shape == (2, size // 8, size // 8) and codes.dtype == torch.long
        assert codes.max() < model.codebook_size == 60
        y = model.decode(codes)
        assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    model.save_pretrained(tmp_path / "tok")
    assert json.loads((tmp_path / "tok" / "config.json").read_text())["kind"] == "fsq"
    loaded = load_visual_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, FSQAutoencoder) and loaded.kind == "fsq"
    assert torch.equal(loaded.encode(x), model.encode(x))
    assert tokenizer_identity(loaded)["sha256"] == model.fingerprint()
    with torch.inference_mode():  # the interface must work under inference mode too
        assert torch.equal(loaded.decode(loaded.encode(x)), model.decode(model.encode(x)))


def test_cpu_batches_run_in_pieces_with_the_same_result(monkeypatch):
    """On a CPU encode/decode split large batches (cheaper per image); the pieces change nothing."""
    import simplear.visual_tokenizers.autoencoder as autoencoder

    torch.manual_seed(0)
    model = FSQAutoencoder(TINY).eval()
    x = torch.rand(5, 3, 64, 64) * 2 - 1
    whole_codes, whole_images = model.encode(x), model.decode(model.encode(x))
    calls = []
    forward = model.decoder.forward
    monkeypatch.setattr(model.decoder, "forward", lambda z: calls.append(len(z)) or forward(z))
    monkeypatch.setattr(autoencoder, "CPU_PIECE_PIXELS", 2 * 64 * 64)  # two 64-px images per piece
    codes = model.encode(x)
    images = model.decode(codes)
    assert calls == [2, 2, 1]
    assert torch.equal(codes, whole_codes) and torch.allclose(images, whole_images, atol=1e-6)
    assert images.is_contiguous() and codes.is_contiguous()
    assert model.decode(codes[:0]).shape == (0, 3, 64, 64) and model.encode(x[:0]).shape == (0, 8, 8)


def test_channels_last_inference_matches_nchw_and_training_stays_nchw():
    """encode/decode run channels-last on a CPU (faster); training passes go back to NCHW, the
    parameters (and so an optimiser's references) stay the same objects, and results agree."""
    torch.manual_seed(0)
    cfg = FSQAutoencoderConfig(levels=(8, 5, 5), downsample=8, channels=(8, 16, 16, 16), res_blocks=(0, 1, 0, 1))
    model = FSQAutoencoder(cfg).eval()
    params = [id(p) for p in model.parameters()]
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():  # the plain NCHW computation, as the training pass runs it
        z_ref, codes_ref = model.quantizer(model.encoder(x))
        images_ref = model.decoder(z_ref).clamp(-1, 1)
    assert model.decoder.conv_in.weight.is_contiguous()
    codes = model.encode(x)
    images = model.decode(codes)
    assert model.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.decoder.conv_in.weight.is_contiguous()
    assert torch.equal(codes, codes_ref) and codes.is_contiguous()
    assert images.is_contiguous() and torch.allclose(images, images_ref, atol=1e-5)
    recon, _ = model.train()(x)
    assert model.decoder.conv_in.weight.is_contiguous() and [id(p) for p in model.parameters()] == params
    assert torch.allclose(recon.detach().clamp(-1, 1), images_ref, atol=1e-5)


def test_autoencoder_rejects_bad_input(tmp_path):
    model = FSQAutoencoder(TINY)
    with pytest.raises(ValueError, match="divisible"):
        model.encode(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError):
        model.encode(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="out of range"):
        model.decode(torch.full((1, 2, 2), 60))
    with pytest.raises(ValueError):
        FSQAutoencoderConfig(downsample=16, channels=(8, 8, 8, 8))
    with pytest.raises(FileNotFoundError):
        load_visual_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no visual tokenizer"):
        load_visual_tokenizer(tmp_path / "empty")


def test_fingerprint_changes_with_weights():
    a, b = FSQAutoencoder(TINY), FSQAutoencoder(TINY)
    b.load_state_dict(a.state_dict())
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        b.decoder.conv_out.bias.add_(1e-3)
    assert a.fingerprint() != b.fingerprint()
    # The codes' identity ignores the decoder (its own shape included) and follows the encoder.
    assert a.codes_fingerprint() == b.codes_fingerprint() != a.fingerprint()
    wide = FSQAutoencoder(dataclasses.replace(TINY, decoder_channels=tuple(2 * c for c in TINY.channels)))
    wide.encoder.load_state_dict(a.encoder.state_dict())
    assert wide.codes_fingerprint() == a.codes_fingerprint()
    with torch.no_grad():
        b.encoder.conv_in.bias.add_(1e-3)
    assert a.codes_fingerprint() != b.codes_fingerprint()


def test_pixel_norm_makes_codes_depend_only_on_nearby_pixels():
    """With norm="pixel" a code is a function of the pixels in the encoder's receptive field:
    drawing something far away changes no code near the other corner (with GroupNorm, whose
    statistics span the image, it does); the same content also encodes alike in a smaller image."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    far = x.clone()
    far[:, :, 96:, 96:] = torch.rand(1, 3, 32, 32) * 2 - 1  # bottom-right corner only
    changed = {}
    for norm in ("group", "pixel"):
        torch.manual_seed(1)
        model = FSQAutoencoder(FSQAutoencoderConfig(levels=(8, 5, 5), downsample=8, channels=(8, 16, 16, 16),
                                                    res_blocks=(0, 1, 0, 1), norm=norm)).eval()
        a, b = model.encode(x), model.encode(far)
        changed[norm] = int((a[:, :6, :6] != b[:, :6, :6]).sum())  # top-left, 48+ px from the change
        if norm == "pixel":
            assert torch.equal(a[:, :6, :6], model.encode(x[:, :, :96, :96])[:, :6, :6])
            assert not torch.equal(a[:, 12:, 12:], b[:, 12:, 12:])  # the changed corner does change
    assert changed["pixel"] == 0 and changed["group"] > 0


def test_pixel_norm_is_group_norm_of_each_position():
    from simplear.visual_tokenizers.autoencoder import PixelGroupNorm

    torch.manual_seed(0)
    pixel, group = PixelGroupNorm(4, 16), torch.nn.GroupNorm(4, 16)
    with torch.no_grad():
        for p in (*pixel.parameters(), *group.parameters()):
            p.normal_()
    group.load_state_dict(pixel.state_dict())  # the same parameter names and shapes
    x = torch.randn(2, 16, 5, 7)
    by_position = x.permute(0, 2, 3, 1).reshape(-1, 16, 1, 1)  # every position its own 1 x 1 image
    expected = group(by_position).reshape(2, 5, 7, 16).permute(0, 3, 1, 2)
    assert torch.allclose(pixel(x), expected, atol=1e-5)
    assert torch.allclose(pixel(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-5)


def test_norm_setting_saves_loads_and_leaves_group_identities_alone(tmp_path):
    group = FSQAutoencoderConfig(levels=(5, 4, 3), channels=(8, 8, 8, 8), res_blocks=(0, 0, 0, 1))
    assert "norm" not in group.to_dict()  # tokenizers saved before the setting keep their fingerprint
    assert FSQAutoencoderConfig.from_dict(group.to_dict()).norm == "group"
    torch.manual_seed(0)
    model = FSQAutoencoder(dataclasses.replace(group, norm="pixel"))
    model.save_pretrained(tmp_path / "tok")
    assert json.loads((tmp_path / "tok/config.json").read_text())["norm"] == "pixel"
    loaded = load_visual_tokenizer(tmp_path / "tok")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert loaded.config.norm == "pixel" and torch.equal(loaded.encode(x), model.encode(x))
    assert loaded.fingerprint() == model.fingerprint() != FSQAutoencoder(group).fingerprint()
    with pytest.raises(ValueError, match="norm must be one of group, pixel"):
        FSQAutoencoderConfig(norm="batch")


# --- Cosmos DV8x16x16 on TorchScript stand-ins ---------------------------------------------------


class _StandInEncoder(torch.nn.Module):
    """Cosmos's encoder signature: B x 3 x T x H x W in [-1, 1] -> (indices B x t x h x w, codes)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.nn.functional.avg_pool3d(x, kernel_size=(1, 16, 16))  # B x 3 x T x h x w
        levels = ((pooled + 1.0) / 2.0 * 39.0).round().clamp(0, 39).long()
        indices = levels[:, 0] * 1600 + levels[:, 1] * 40 + levels[:, 2]
        return indices, pooled


class _StandInDecoder(torch.nn.Module):
    """indices B x t x h x w -> video B x 3 x T x H x W in [-1, 1] (flat 16 x 16 patches)."""

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        rgb = torch.stack([indices // 1600, (indices // 40) % 40, indices % 40], dim=1).float()
        video = rgb / 39.0 * 2.0 - 1.0
        return video.repeat_interleave(16, dim=3).repeat_interleave(16, dim=4)


def _write_cosmos(folder, encoder=None):
    folder.mkdir(parents=True)
    torch.jit.save(torch.jit.script(encoder or _StandInEncoder()), str(folder / "encoder.jit"))
    torch.jit.save(torch.jit.script(_StandInDecoder()), str(folder / "decoder.jit"))
    return folder


def test_cosmos_loader_wraps_time_axis(tmp_path):
    tok = load_visual_tokenizer(_write_cosmos(tmp_path / "cosmos"))
    assert isinstance(tok, CosmosTokenizer)
    assert (tok.kind, tok.codebook_size, tok.downsample) == ("cosmos", 64000, 16)
    colours = torch.tensor([[-1.0, 0.0, 1.0], [1.0, -1.0, 0.0]])
    x = colours.view(2, 3, 1, 1).expand(2, 3, 32, 48).contiguous()
    codes = tok.encode(x)
    assert codes.shape == (2, 2, 3) and codes.dtype == torch.long
    assert (codes[0] == 0 * 1600 + 20 * 40 + 39).all()  # (-1, 0, 1) -> levels (0, 20, 39)
    y = tok.decode(codes)
    assert y.shape == x.shape
    assert torch.allclose(y, x, atol=1.5 / 39)
    identity = tokenizer_identity(tok)
    assert len(identity["sha256"]) == 64
    encoder_bytes = (tmp_path / "cosmos" / "encoder.jit").read_bytes()
    assert identity["codes_sha256"] == hashlib.sha256(encoder_bytes).hexdigest() != identity["sha256"]


class _BadEncoder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.nn.functional.avg_pool3d(x, kernel_size=(1, 16, 16))
        return torch.full_like(pooled[:, 0], 70000, dtype=torch.long), pooled


def test_cosmos_loader_checks_codebook(tmp_path):
    tok = load_visual_tokenizer(_write_cosmos(tmp_path / "bad", _BadEncoder()))
    with pytest.raises(ValueError, match="out of range"):
        tok.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="out of range"):
        tok.decode(torch.full((1, 1, 1), 64000))


# --- images ----------------------------------------------------------------------------------------


def test_pil_to_tensor_center_crop_policy():
    # A 60 x 30 image: left and right 15-pixel margins are red, the centre square is blue.
    array = np.zeros((30, 60, 3), dtype=np.uint8)
    array[:, :15] = (255, 0, 0)
    array[:, 45:] = (255, 0, 0)
    array[:, 15:45] = (0, 0, 255)
    x = pil_to_tensor(Image.fromarray(array), size=16)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[0, 2], torch.ones(16, 16)) and torch.allclose(x[0, 0], -torch.ones(16, 16))
    with pytest.raises(ValueError, match="different sizes"):
        pil_to_tensor([Image.new("RGB", (8, 8)), Image.new("RGB", (9, 8))])


def test_tensor_to_pil_roundtrip_and_modes():
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    images = [Image.fromarray(a) for a in arrays]
    back = tensor_to_pil(pil_to_tensor(images))
    assert all(np.array_equal(np.asarray(b), a) for b, a in zip(back, arrays))
    rgba = Image.new("RGBA", (4, 4), (255, 255, 255, 0))  # fully transparent -> black
    assert pil_to_tensor(rgba).eq(-1).all()
    assert pil_to_tensor(Image.new("L", (4, 4), 255)).eq(1).all()


def test_save_half_precision_is_smaller_and_loads_as_float32(tmp_path):
    torch.manual_seed(0)
    model = FSQAutoencoder(TINY)
    model.save_pretrained(tmp_path / "full")
    model.save_pretrained(tmp_path / "half", dtype=torch.float16)
    full, half = (tmp_path / "full/model.safetensors").stat().st_size, (tmp_path / "half/model.safetensors").stat().st_size
    assert half < 0.6 * full
    loaded = load_visual_tokenizer(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError):
        model.save_pretrained(tmp_path / "bad", dtype=torch.int8)
    with pytest.raises(ValueError):
        model.save_pretrained(tmp_path / "bad", decoder_dtype=torch.int8)


def test_a_half_precision_decoder_beside_a_float32_encoder_keeps_the_codes(tmp_path):
    torch.manual_seed(1)
    model = FSQAutoencoder(TINY)
    model.save_pretrained(tmp_path / "mixed", decoder_dtype=torch.float16)
    loaded = load_visual_tokenizer(tmp_path / "mixed")
    assert loaded.codes_fingerprint() == model.codes_fingerprint()  # the encoder's bits are untouched
    assert loaded.fingerprint() != model.fingerprint()
    for name, value in loaded.state_dict().items():
        rounded = model.state_dict()[name].half().float() if name.startswith("decoder.") else model.state_dict()[name]
        assert torch.equal(value, rounded), name
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.encode(images), model.encode(images))
