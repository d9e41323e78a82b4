"""The server's one point of contact with `simplear.pipeline.Pipeline`.

The batcher hands a list of jobs here; this module turns them into one pipeline call (one prompt
per image, one seed per image), splits the images back per job, and turns the pipeline's
`progress` callback into partial decodes: when a job asked for P partial images, the rows
sampled so far are decoded at P evenly spaced points and the rows not yet sampled are shown
grey. Partial decodes cost a visual-tokenizer decode each, so they are made only for the jobs
that asked, only at those points.

Anything with the pipeline's call signature, `config.image_size`, `config.sampling` and a
`visual_tokenizer` with `downsample` and `decode` can be served (the tests use a fake).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

SAMPLERS = ("ar", "fast", "jacobi")


@dataclass(frozen=True)
class SamplingSettings:
    """Everything that must be equal for two requests to share a sampler batch."""

    image_size: int
    negative_prompt: str | None = None
    cfg_scale: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    sampler: str = "ar"


@dataclass(frozen=True)
class ModelInfo:
    """What the server needs to know about the model it serves."""

    native_size: int
    downsample: int
    sampling: dict
    samplers: tuple[str, ...]


def model_info(pipeline) -> ModelInfo:
    config = pipeline.config
    sampling = config.sampling
    if dataclasses.is_dataclass(sampling):
        sampling = dataclasses.asdict(sampling)
    samplers = tuple(getattr(pipeline, "samplers", SAMPLERS))
    return ModelInfo(
        native_size=int(config.image_size),
        downsample=int(pipeline.visual_tokenizer.downsample),
        sampling=dict(sampling or {}),
        samplers=samplers,
    )


def checkpoints(partial_images: int, rows: int) -> list[int]:
    """Row counts after which to send partial images: P points spread over the rows, none at 0
    or at the end (the final image is sent anyway)."""
    points = sorted({math.ceil(k * rows / (partial_images + 1)) for k in range(1, partial_images + 1)})
    return [r for r in points if 0 < r < rows]


class _PartialDecoder:
    """The `progress` callback: decodes rows done so far for jobs that asked for partials."""

    def __init__(self, pipeline, jobs, grid_w: int, grid_h: int, image_size: int):
        self.pipeline = pipeline
        self.grid = (grid_h, grid_w)
        self.image_size = image_size
        self.targets = []  # (job, first row index in the batch, remaining checkpoints)
        row = 0
        for job in jobs:
            if job.partial_images > 0 and job.on_partial is not None:
                self.targets.append([job, row, checkpoints(job.partial_images, grid_h), 0])
            row += job.n

    def __call__(self, codes, tokens_done: int | None = None, tokens_total: int | None = None) -> None:
        """`codes`: long tensor B x t (tokens sampled so far, raster order) or B x h x w."""
        import torch

        grid_h, grid_w = self.grid
        codes = torch.as_tensor(codes)
        flat = codes.reshape(codes.shape[0], -1)
        done = flat.shape[1] if tokens_done is None else int(tokens_done)
        rows_done = min(done // grid_w, grid_h)
        due = [t for t in self.targets if t[2] and rows_done >= t[2][0]]
        if not due:
            return
        for target in due:
            job, start, points, index = target
            while points and rows_done >= points[0]:
                points.pop(0)
            grid = torch.zeros(job.n, grid_h * grid_w, dtype=torch.long)
            take = rows_done * grid_w
            grid[:, :take] = flat[start : start + job.n, :take].to(torch.long).cpu()
            images = decode_rows(self.pipeline, grid.view(job.n, grid_h, grid_w), rows_done, self.image_size)
            for i, image in enumerate(images):
                job.on_partial(i, index, rows_done, grid_h, image)
            target[3] = index + 1


def decode_rows(pipeline, codes, rows_done: int, image_size: int):
    """Decode a B x h x w grid whose first `rows_done` rows are real; grey out the rest."""
    import torch
    from PIL import Image

    from simplear.visual_tokenizers.images import tensor_to_pil

    vt = pipeline.visual_tokenizer
    device = getattr(pipeline, "device", None)
    with torch.no_grad():
        pixels = vt.decode(codes.to(device) if device is not None else codes)
    images = []
    for image in tensor_to_pil(pixels.float().cpu()):
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BICUBIC)
        cut = round(image_size * rows_done / codes.shape[1])
        if cut < image_size:
            grey = Image.new("RGB", (image_size, image_size - cut), (128, 128, 128))
            image.paste(grey, (0, cut))
        images.append(image)
    return images


def run_pipeline(pipeline, jobs) -> list[list]:
    """Run `jobs` (same settings) as one pipeline call; returns each job's list of PIL images."""
    settings: SamplingSettings = jobs[0].settings
    prompts = [job.prompt for job in jobs for _ in range(job.n)]
    seeds = [job.seed + i for job in jobs for i in range(job.n)]
    progress = None
    if any(job.partial_images > 0 and job.on_partial is not None for job in jobs):
        grid = settings.image_size // int(pipeline.visual_tokenizer.downsample)
        progress = _PartialDecoder(pipeline, jobs, grid, grid, settings.image_size)
    out = pipeline(
        prompts,
        negative_prompt=settings.negative_prompt,
        num_images=1,
        image_size=settings.image_size,
        cfg_scale=settings.cfg_scale,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        seed=seeds,
        sampler=settings.sampler,
        progress=progress,
    )
    images = list(out.images)
    if len(images) != len(prompts):
        raise RuntimeError(f"pipeline returned {len(images)} images for {len(prompts)} prompts")
    results, start = [], 0
    for job in jobs:
        results.append(images[start : start + job.n])
        start += job.n
    return results
