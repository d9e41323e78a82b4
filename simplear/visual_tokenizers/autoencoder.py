"""Our trainable visual tokenizer: a small convolutional autoencoder with an FSQ bottleneck.

It is what the embedded default model uses, so it is built to be small (a few MB of weights),
cheap on a CPU and fully convolutional: the same weights encode a 64 px image to an 8 x 8 grid
and a 128 px image to 16 x 16 (downsample 8), which lets pretraining and SFT run at different
resolutions with one codebook. It is not a Cosmos replacement for photographs (no perceptual or
adversarial losses); for those, load a Cosmos folder (`cosmos.py`).

A saved tokenizer is a folder with `config.json` (`{"kind": "fsq", ...}`) and `model.safetensors`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from simplear.utils import atomic_path, atomic_write_json, state_sha256
from simplear.visual_tokenizers.fsq import FSQ

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# On a CPU, `encode`/`decode` split a batch into pieces of about this many pixels: past it the
# activations outgrow the caches and each image costs more (the 2-core CPU decoded a 128-px image
# in 20.6-24.7 ms in batches of 8-16 and 27.2-28.7 ms in batches of 32-128; docs/benchmarks.md).
# On a GPU a batch runs whole.
CPU_PIECE_PIXELS = 16 * 128 * 128


@dataclass(frozen=True)
class FSQAutoencoderConfig:
    """Architecture of an FSQ autoencoder.

    `channels[i]` is the width at 1 / 2**i of the input resolution, so there are exactly
    log2(downsample) + 1 entries; `res_blocks[i]` residual blocks run at that level (in the encoder
    and, mirrored, in the decoder). Keep the full-resolution levels thin: they cost the most.

    `norm` is how every normalisation layer (residual blocks, output norms) works: "group" is
    GroupNorm, whose mean and variance run over the whole image, so every code depends a little on
    everything else in the picture (another object far away, or the image's size, can change it);
    "pixel" normalises each position's channels on their own (the same groups), so a code depends
    only on the pixels inside the encoder's receptive field, and the same content gets the same
    code anywhere.

    `decoder_channels` / `decoder_res_blocks` give the decoder its own widths and depths (None: the
    encoder's), so a larger decoder can be trained for an existing encoder's codes.
    """

    levels: tuple[int, ...] = (8, 5, 5, 5)
    downsample: int = 8
    channels: tuple[int, ...] = (32, 64, 128, 128)
    res_blocks: tuple[int, ...] = (0, 1, 1, 2)
    norm_groups: int = 8
    norm: str = "group"
    decoder_channels: tuple[int, ...] | None = None
    decoder_res_blocks: tuple[int, ...] | None = None

    def __post_init__(self):
        for name in ("levels", "channels", "res_blocks", "decoder_channels", "decoder_res_blocks"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.downsample not in (4, 8, 16, 32):
            raise ValueError(f"downsample must be 4, 8, 16 or 32, got {self.downsample}")
        n = int(math.log2(self.downsample)) + 1
        for part, channels, res_blocks in (("", self.channels, self.res_blocks),
                                           ("decoder_", self.dec_channels, self.dec_res_blocks)):
            if len(channels) != n or len(res_blocks) != n:
                raise ValueError(
                    f"downsample {self.downsample} needs {n} entries in {part}channels and {part}res_blocks, "
                    f"got {len(channels)} and {len(res_blocks)}"
                )
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if any(c % self.norm_groups for c in (*self.channels, *self.dec_channels)):
            raise ValueError(f"every channel count must be divisible by norm_groups={self.norm_groups}")

    @property
    def dec_channels(self) -> tuple[int, ...]:
        return self.channels if self.decoder_channels is None else self.decoder_channels

    @property
    def dec_res_blocks(self) -> tuple[int, ...]:
        return self.res_blocks if self.decoder_res_blocks is None else self.decoder_res_blocks

    def encoder_part(self) -> FSQAutoencoderConfig:
        """The fields that decide the codes (the decoder's own left out): equal for two tokenizers
        whose encoders are interchangeable."""
        return dataclasses.replace(self, decoder_channels=None, decoder_res_blocks=None)

    def to_dict(self) -> dict:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        if data["norm"] == "group":  # as written before `norm` existed: old tokenizers keep their identity
            del data["norm"]
        for key in ("decoder_channels", "decoder_res_blocks"):  # likewise for tokenizers before these
            if data[key] is None:
                del data[key]
        return {"kind": "fsq", **data}

    @classmethod
    def from_dict(cls, data: dict) -> FSQAutoencoderConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names - {"kind", "codebook_size"}
        if unknown:
            raise ValueError(f"unknown keys in FSQ autoencoder config: {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in names})


NORMS = ("group", "pixel")


class PixelGroupNorm(nn.Module):
    """GroupNorm whose statistics are each position's own: the channels of every pixel are split
    into `groups` and normalised within their group, with a learnt per-channel scale and shift (the
    parameters are named as nn.GroupNorm's). Nothing is averaged across positions."""

    def __init__(self, groups: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = x.permute(0, 2, 3, 1).reshape(b, h, w, self.groups, c // self.groups)
        y = F.layer_norm(y, y.shape[-1:], eps=self.eps).reshape(b, h, w, c) * self.weight + self.bias
        return y.permute(0, 3, 1, 2)


def make_norm(kind: str, groups: int, channels: int) -> nn.Module:
    return nn.GroupNorm(groups, channels) if kind == "group" else PixelGroupNorm(groups, channels)


class ResBlock(nn.Module):
    def __init__(self, channels: int, groups: int, norm: str = "group"):
        super().__init__()
        self.norm1 = make_norm(norm, groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = make_norm(norm, groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Encoder(nn.Module):
    def __init__(self, cfg: FSQAutoencoderConfig):
        super().__init__()
        ch, g = cfg.channels, cfg.norm_groups
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        self.levels = nn.ModuleList()
        for i in range(len(ch)):
            blocks = [ResBlock(ch[i], g, cfg.norm) for _ in range(cfg.res_blocks[i])]
            if i + 1 < len(ch):  # strided conv halves the resolution and changes the width
                blocks.append(nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1))
            self.levels.append(nn.Sequential(*blocks))
        self.norm_out = make_norm(cfg.norm, g, ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], len(cfg.levels), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: FSQAutoencoderConfig):
        super().__init__()
        ch, g = cfg.dec_channels, cfg.norm_groups
        self.conv_in = nn.Conv2d(len(cfg.levels), ch[-1], 3, padding=1)
        self.levels = nn.ModuleList()
        for i in reversed(range(len(ch))):
            blocks: list[nn.Module] = [ResBlock(ch[i], g, cfg.norm) for _ in range(cfg.dec_res_blocks[i])]
            if i > 0:  # nearest upsampling + conv: no checkerboard artefacts of transposed convs
                blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i], ch[i - 1], 3, padding=1)]
            self.levels.append(nn.Sequential(*blocks))
        self.norm_out = make_norm(cfg.norm, g, ch[0])
        self.conv_out = nn.Conv2d(ch[0], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class FSQAutoencoder(nn.Module):
    """Images B x 3 x H x W in [-1, 1] <-> codes B x (H/d) x (W/d) in [0, prod(levels))."""

    kind = "fsq"

    def __init__(self, config: FSQAutoencoderConfig | None = None):
        super().__init__()
        self.config = config or FSQAutoencoderConfig()
        self.encoder = Encoder(self.config)
        self.quantizer = FSQ(self.config.levels)
        self.decoder = Decoder(self.config)
        self.source: str | None = None  # folder it was loaded from, for manifests
        self._layout = torch.contiguous_format  # of the convolution weights (see `_use_layout`)

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"expected images as a float tensor B x 3 x H x W in [-1, 1], got {shape}")
        h, w = images.shape[-2:]
        if h % self.downsample or w % self.downsample:
            raise ValueError(f"image size {h}x{w} is not divisible by the downsampling factor {self.downsample}")
        return images.to(self.device, torch.float32)

    def _use_layout(self, inference: bool) -> torch.memory_format:
        """The memory format for this pass, with the convolution weights converted to it.

        On a CPU, `encode`/`decode` run channels-last: oneDNN's convolutions, GroupNorm and
        upsampling are faster on NHWC (decode 1.56-1.82x, encode 1.10-1.20x on the 2-core CPU;
        docs/benchmarks.md). Training stays NCHW, which was the faster layout for its backward pass.
        """
        layout = torch.channels_last if inference and self.device.type == "cpu" else torch.contiguous_format
        self.set_conv_layout(layout)
        return layout

    def set_conv_layout(self, layout: torch.memory_format) -> None:
        """Store the convolution weights in `layout` (a no-op when they already are). Swaps
        `param.data` in place, so the parameters, and an optimiser holding them, are unchanged."""
        if self._layout != layout:
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    module.weight.data = module.weight.data.contiguous(memory_format=layout)
            self._layout = layout

    def forward(self, images: torch.Tensor, frozen_encoder: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction, codes), gradients flow through FSQ straight-through.

        `frozen_encoder=True` (decoder-only training) runs the encoder and FSQ as `encode` does:
        float32 even inside an autocast region, and without a graph, so the decoder learns from
        exactly the codes it will be given at inference (a bf16 encoder moves some of them).
        """
        self._use_layout(inference=False)
        images = self._check_images(images)
        if frozen_encoder:
            with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
                zq, codes = self.quantizer(self.encoder(images))
        else:
            zq, codes = self.quantizer(self.encoder(images))
        return self.decoder(zq), codes

    def _pieces(self, batch: torch.Tensor, pixels_per_item: int) -> tuple[torch.Tensor, ...]:
        """`batch` split along dim 0 into the pieces `encode`/`decode` run one at a time."""
        if self.device.type != "cpu":
            return (batch,)
        return batch.split(max(1, CPU_PIECE_PIXELS // pixels_per_item))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """float B x 3 x H x W in [-1, 1] -> long codes B x H/d x W/d."""
        layout = self._use_layout(inference=True)
        images = self._check_images(images)
        pieces = self._pieces(images, images.shape[-2] * images.shape[-1])
        codes = [self.quantizer(self.encoder(p.contiguous(memory_format=layout)))[1] for p in pieces]
        return torch.cat(codes).contiguous()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """long codes B x h x w -> float images B x 3 x h*d x w*d in [-1, 1]."""
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
            raise ValueError(f"expected codes as a long tensor B x h x w, got {getattr(codes, 'shape', codes)}")
        layout = self._use_layout(inference=True)
        codes = codes.to(self.device)
        images = []
        for piece in self._pieces(codes, codes.shape[-2] * codes.shape[-1] * self.downsample**2):
            zq = self.quantizer.quantized_from_codes(piece).contiguous(memory_format=layout)
            images.append(self.decoder(zq).clamp_(-1.0, 1.0))
        return torch.cat(images).contiguous()

    def fingerprint(self) -> str:
        """sha256 of the config and the weights: what token shards record as the tokenizer's identity."""
        return state_sha256(self, prefix=json.dumps(self.config.to_dict(), sort_keys=True).encode())

    def codes_fingerprint(self) -> str:
        """sha256 of what decides the codes (the encoder's config, the encoder and FSQ weights): equal
        for two tokenizers that differ only in their decoders (`--freeze-encoder`), whose shards and
        models are therefore interchangeable."""
        prefix = b"codes:" + json.dumps(self.config.encoder_part().to_dict(), sort_keys=True).encode()
        return state_sha256(nn.ModuleDict({"encoder": self.encoder, "quantizer": self.quantizer}), prefix=prefix)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float32,
                        decoder_dtype: torch.dtype | None = None) -> Path:
        """Write `config.json` and `model.safetensors` (each atomically) into `directory`.

        `dtype=torch.float16` halves the file (for shipping inside the package); loading casts
        the weights back to float32, so the loaded model's fingerprint is that of the rounded weights.
        `decoder_dtype` (default: `dtype`) stores the decoder alone in another dtype: float32
        encoder + float16 decoder keeps every code (and `codes_fingerprint`) of a float32 tokenizer.
        """
        decoder_dtype = dtype if decoder_dtype is None else decoder_dtype
        for value in (dtype, decoder_dtype):
            if value not in (torch.float32, torch.float16, torch.bfloat16):
                raise ValueError(f"dtype must be float32, float16 or bfloat16, got {value}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().to(decoder_dtype if k.startswith("decoder.") else dtype).contiguous()
                 for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "kind": "fsq"})
        config = {**self.config.to_dict(), "codebook_size": self.codebook_size}
        atomic_write_json(directory / CONFIG_NAME, config)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None) -> FSQAutoencoder:
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: an FSQ tokenizer folder has {CONFIG_NAME} and {WEIGHTS_NAME}")
        data = json.loads(config_path.read_text())
        if data.get("kind") != "fsq":
            raise ValueError(f"{config_path} is not an FSQ autoencoder config (kind={data.get('kind')!r})")
        model = cls(FSQAutoencoderConfig.from_dict(data))
        model.load_state_dict(load_file(str(weights_path)), strict=True)
        model.source = str(directory.resolve())
        model.eval()
        if device is not None:
            model.to(device)
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
