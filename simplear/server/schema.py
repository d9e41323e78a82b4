"""The JSON shapes of the HTTP API: OpenAI's Images API plus simplear's sampling extensions.

The request model is strict (no "2" for 2, no NaN, no unknown fields) because a lenient parser
turns client bugs into silently different images. Limits that depend on the served model or the
server's settings (sizes, `n`, prompt length) are checked in `app.py`, where they are known; the
schema carries only the limits that hold for every model, so the OpenAPI document stays true.
OpenAI parameters that have no meaning here (`quality`, `style`, `user`, ...) are accepted and
ignored, so existing clients work unchanged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**63 - 1


class ImageGenerationRequest(BaseModel):
    """Body of `POST /v1/images/generations`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(description="Text of the image to generate.")
    model: str | None = Field(None, description="The served model's id (see GET /v1/models); optional.")
    n: int | None = Field(None, ge=1, description="Number of images (1 to the server's limit).")
    size: str | None = Field(
        None, description="'WxH' in pixels, one of the sizes the server lists, or 'auto' (native size)."
    )
    response_format: Literal["b64_json", "url"] | None = Field(None, description="Default b64_json.")
    output_format: Literal["png", "jpeg", "webp"] | None = Field(None, description="Default png.")
    output_compression: int | None = Field(None, ge=0, le=100, description="Quality for jpeg/webp.")
    stream: bool | None = Field(
        None, description="Answer with server-sent events: partial images, then one completed event per image."
    )
    partial_images: int | None = Field(
        None, ge=0, le=16, description="Partial decodes per image while streaming (rows as they complete)."
    )
    # Accepted for compatibility with OpenAI clients; they do not change the result.
    quality: Literal["low", "medium", "high", "xhigh", "max", "auto", "standard", "hd"] | None = None
    style: Literal["vivid", "natural"] | None = None
    background: Literal["opaque", "auto"] | None = Field(None, description="'transparent' is not supported.")
    moderation: Literal["low", "auto"] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    # simplear extensions.
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Seed of the first image; image i uses seed + i. Random if absent."
    )
    negative_prompt: str | None = Field(None, description="Unconditional branch of CFG (the model's default if absent).")
    cfg_scale: float | None = Field(None, ge=0.0, le=100.0, allow_inf_nan=False, description="CFG scale.")
    temperature: float | None = Field(None, ge=0.0, le=10.0, allow_inf_nan=False, description="0 = greedy.")
    top_k: int | None = Field(None, ge=0, description="0 keeps every code.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    sampler: str | None = Field(None, description="Sampler name (see GET /v1/models); default 'ar'.")


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    seed: int | None = Field(None, description="simplear: the seed that reproduces this image.")


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    size: str | None = None
    output_format: str | None = None
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "simplear"
    # simplear extensions the web page reads to fill its settings.
    sizes: list[str] = Field(default_factory=list)
    default_size: str | None = None
    samplers: list[str] = Field(default_factory=list)
    sampling: dict[str, float | int | None] = Field(default_factory=dict)
    max_n: int = 1
    max_prompt_chars: int = 0


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    queued_requests: int
    running_batches: int
    batches_run: int
    mean_batch_images: float
