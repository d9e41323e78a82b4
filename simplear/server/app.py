"""The HTTP API and the web page: `create_app(pipeline, config)` returns a FastAPI app.

Endpoints (OpenAPI document at `/openapi.json`, interactive docs at `/docs`):

- `POST /v1/images/generations`: OpenAI's Images API (`prompt`, `n`, `size`, `response_format`,
  `output_format`, `stream` + `partial_images`) plus simplear's sampling extensions (`seed`,
  `cfg_scale`, `temperature`, `top_k`, `top_p`, `negative_prompt`, `sampler`). With
  `"stream": true` the answer is server-sent events in OpenAI's shape:
  `image_generation.partial_image` events (rows sampled so far, decoded) then one
  `image_generation.completed` event per image.
- `GET /v1/models` (+ `/v1/models/{id}`), `GET /health`, `GET /v1/images/files/{name}` (images
  answered with `response_format="url"`), and `GET /` (the web page).

With `ServerConfig.api_key` set, the /v1 endpoints need `Authorization: Bearer <key>` (what the
openai client sends); the page, /health and image URLs (unguessable names) stay open.

The app does no sampling itself: every request becomes an `ImageJob` for the `Batcher`, which
gathers concurrent requests into one pipeline call. Handlers validate, submit and wait.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import json
import re
import secrets
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from simplear.server.batching import Batcher, BatchingConfig, ImageJob, JobCancelled, QueueFull
from simplear.server.errors import APIError, install_error_handlers, invalid, queue_full, timed_out
from simplear.server.pipeline_adapter import SamplingSettings, model_info
from simplear.server.schema import (
    Health,
    ImageData,
    ImageGenerationRequest,
    ImagesResponse,
    ModelCard,
    ModelList,
    Usage,
)

STATIC_DIR = Path(__file__).parent / "static"
SIZE_RE = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$")
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(frozen=True)
class ServerConfig:
    """Limits and names the server applies on top of the model's own settings."""

    model_id: str = "simplear"
    sizes: tuple[int, ...] = ()  # square sizes offered; empty = the model's native size only
    max_n: int = 4
    max_prompt_chars: int = 2000
    stored_images: int = 256  # images kept in memory for response_format="url"
    api_key: str | None = None  # when set, /v1 endpoints need "Authorization: Bearer <api_key>"
    batching: BatchingConfig = field(default_factory=BatchingConfig)

    def __post_init__(self):
        if not self.model_id.strip():
            raise ValueError(f"model_id must be a non-empty name, got {self.model_id!r}")
        if self.max_n < 1 or self.max_n > self.batching.max_batch_images:
            raise ValueError(
                f"max_n must be in [1, max_batch_images={self.batching.max_batch_images}], got {self.max_n}"
            )
        if self.max_prompt_chars < 1:
            raise ValueError(f"max_prompt_chars must be >= 1, got {self.max_prompt_chars}")
        if any(s < 1 for s in self.sizes):
            raise ValueError(f"sizes must be positive, got {self.sizes}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ValueError("api_key must be at least 8 characters")


class ImageStore:
    """A small in-memory LRU of encoded images, for `response_format="url"`."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: collections.OrderedDict[str, tuple[bytes, str]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def put(self, data: bytes, fmt: str) -> str:
        name = f"{secrets.token_urlsafe(12)}.{fmt}"
        with self._lock:
            self._items[name] = (data, MEDIA_TYPES[fmt])
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return name

    def get(self, name: str) -> tuple[bytes, str] | None:
        with self._lock:
            return self._items.get(name)


def encode_image(image, fmt: str, compression: int | None) -> bytes:
    """PIL image -> bytes in `fmt`; `compression` is the jpeg/webp quality (OpenAI's name)."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG")
    else:
        quality = 90 if compression is None else max(1, compression)
        image.convert("RGB").save(buf, format=fmt.upper(), quality=quality)
    return buf.getvalue()


class _Service:
    """Request validation and job building; one per app, shared by the handlers."""

    def __init__(self, pipeline, config: ServerConfig):
        self.pipeline = pipeline
        self.config = config
        self.info = model_info(pipeline)
        self.codebook_size = int(getattr(pipeline.visual_tokenizer, "codebook_size", 0)) or None
        sizes = config.sizes or (self.info.native_size,)
        for size in sizes:
            if size % self.info.downsample:
                raise ValueError(f"size {size} is not a multiple of the visual tokenizer's {self.info.downsample}")
        self.sizes = tuple(sorted(set(sizes)))
        self.batcher = Batcher(pipeline, config.batching)
        self.store = ImageStore(config.stored_images)
        self.created = int(time.time())

    def card(self) -> ModelCard:
        return ModelCard(
            id=self.config.model_id,
            created=self.created,
            sizes=[f"{s}x{s}" for s in self.sizes],
            default_size=f"{self.info.native_size}x{self.info.native_size}",
            samplers=list(self.info.samplers),
            sampling={k: v for k, v in self.info.sampling.items() if isinstance(v, (int, float, type(None)))},
            max_n=self.config.max_n,
            max_prompt_chars=self.config.max_prompt_chars,
        )

    def parse_size(self, size: str | None) -> int:
        if size is None or size == "auto":
            return self.info.native_size if self.info.native_size in self.sizes else self.sizes[0]
        offered = ", ".join(f"{s}x{s}" for s in self.sizes)
        match = SIZE_RE.match(size)
        if not match:
            raise invalid(f"Invalid size {size!r}: expected 'WxH' (one of {offered}) or 'auto'.", "size")
        width, height = int(match.group(1)), int(match.group(2))
        if width != height or width not in self.sizes:
            raise invalid(f"Unsupported size {size!r}; this model offers {offered}.", "size")
        return width

    def build_job(self, body: ImageGenerationRequest) -> ImageJob:
        cfg = self.config
        if body.model is not None and body.model != cfg.model_id:
            raise APIError(
                404, f"The model {body.model!r} does not exist; this server serves {cfg.model_id!r}.",
                param="model", code="model_not_found",
            )
        if not body.prompt.strip():
            raise invalid("The prompt is empty.", "prompt")
        if len(body.prompt) > cfg.max_prompt_chars:
            raise invalid(f"The prompt is {len(body.prompt)} characters; the limit is {cfg.max_prompt_chars}.", "prompt")
        if body.negative_prompt is not None and len(body.negative_prompt) > cfg.max_prompt_chars:
            raise invalid(f"negative_prompt is longer than {cfg.max_prompt_chars} characters.", "negative_prompt")
        n = 1 if body.n is None else body.n
        if n > cfg.max_n:
            raise invalid(f"n={n} is above this server's limit of {cfg.max_n}.", "n")
        sampler = body.sampler or "ar"
        if sampler not in self.info.samplers:
            raise invalid(f"Unknown sampler {sampler!r}; choose one of {', '.join(self.info.samplers)}.", "sampler")
        if body.top_k is not None and self.codebook_size and body.top_k > self.codebook_size:
            raise invalid(f"top_k={body.top_k} is above the codebook size {self.codebook_size}.", "top_k")
        if body.partial_images and not body.stream:
            raise invalid("partial_images needs stream=true.", "partial_images")
        settings = SamplingSettings(
            image_size=self.parse_size(body.size),
            negative_prompt=body.negative_prompt,
            cfg_scale=body.cfg_scale,
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            sampler=sampler,
        )
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        return ImageJob(prompt=body.prompt, n=n, seed=seed, settings=settings)

    def submit(self, job: ImageJob):
        try:
            return self.batcher.submit(job)
        except QueueFull:
            raise queue_full(self.config.batching.retry_after_s) from None
        except JobCancelled as err:
            raise APIError(503, str(err), type="server_error", code="shutting_down",
                           headers={"Retry-After": str(self.config.batching.retry_after_s)}) from None

    async def wait(self, job: ImageJob, future) -> list:
        remaining = self.config.batching.timeout_s - (time.monotonic() - job.submitted_at)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), max(remaining, 0.001))
        except asyncio.TimeoutError:
            job.cancel()
            raise timed_out(self.config.batching.timeout_s, self.config.batching.retry_after_s) from None
        except ValueError as err:  # the pipeline refused this request's input
            raise invalid(str(err)) from None
        except JobCancelled as err:
            raise APIError(503, str(err), type="server_error", code="shutting_down") from None

    def usage(self, job: ImageJob) -> Usage:
        grid = job.settings.image_size // self.info.downsample
        vocab = getattr(self.pipeline, "vocab", None)
        prompt_tokens = len(vocab.encode_prompt(job.prompt)) if vocab is not None else 0
        out = job.n * grid * grid
        return Usage(input_tokens=prompt_tokens, output_tokens=out, total_tokens=prompt_tokens + out)


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _stream_response(service: _Service, job: ImageJob, body: ImageGenerationRequest, fmt: str):
    """Submit `job` and answer with server-sent events: partial images as rows complete, then one
    `image_generation.completed` event per image (OpenAI's streaming shape, plus `index`, `seed`,
    `rows_done`, `rows_total`). Errors after the 200 status are sent in-band as an `error` event."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    size = f"{job.settings.image_size}x{job.settings.image_size}"
    common = {"size": size, "output_format": fmt, "background": "opaque", "quality": "auto"}

    def push(item) -> None:  # called from the batcher's thread
        try:
            loop.call_soon_threadsafe(events.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            pass

    def on_partial(index, partial_index, rows_done, rows_total, image) -> None:
        data = base64.b64encode(encode_image(image, fmt, body.output_compression)).decode()
        push(("partial", {"type": "image_generation.partial_image", "b64_json": data,
                          "created_at": int(time.time()), "partial_image_index": partial_index,
                          "index": index, "rows_done": rows_done, "rows_total": rows_total, **common}))

    job.partial_images = body.partial_images or 0
    job.on_partial = on_partial
    future = service.submit(job)  # raises 429 here, before the stream starts
    future.add_done_callback(lambda f: push(("done", None)))

    async def stream():
        try:
            while True:
                remaining = service.config.batching.timeout_s - (time.monotonic() - job.submitted_at)
                try:
                    kind, payload = await asyncio.wait_for(events.get(), max(remaining, 0.001))
                except asyncio.TimeoutError:
                    err = timed_out(service.config.batching.timeout_s, service.config.batching.retry_after_s)
                    yield _sse("error", err.body())
                    return
                if kind == "partial":
                    yield _sse(payload["type"], payload)
                    continue
                break
            try:
                images = future.result()
            except ValueError as exc:
                yield _sse("error", invalid(str(exc)).body())
                return
            except Exception as exc:  # reported in-band: the 200 status is already sent
                yield _sse("error", {"error": {"message": f"{type(exc).__name__}: {exc}",
                                               "type": "server_error", "param": None, "code": None}})
                return
            usage = service.usage(job).model_dump()
            for i, image in enumerate(images):
                data = base64.b64encode(encode_image(image, fmt, body.output_compression)).decode()
                yield _sse("image_generation.completed", {
                    "type": "image_generation.completed", "b64_json": data, "created_at": int(time.time()),
                    "index": i, "seed": job.seed + i, "usage": usage, **common})
        finally:
            job.cancel()  # the client left early: do not run a job nobody will read

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def create_app(pipeline, config: ServerConfig | None = None):
    """A FastAPI app serving `pipeline` (a `simplear.pipeline.Pipeline` or anything shaped like it)."""
    config = config or ServerConfig()
    service = _Service(pipeline, config)

    @asynccontextmanager
    async def lifespan(app):
        service.batcher.open()
        yield
        service.batcher.close()

    app = FastAPI(
        title="simplear",
        version="0.1.0",
        description="Autoregressive text-to-image generation (SimpleAR), OpenAI Images API compatible.",
        lifespan=lifespan,
    )
    app.state.service = service
    install_error_handlers(app)

    async def check_key(request: Request) -> None:
        # The web page, /health and image URLs (unguessable names) stay open; the API needs the key.
        if config.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise APIError(401, "Missing or wrong API key: send the header 'Authorization: Bearer <key>'.",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    keyed = [Depends(check_key)]
    errors = {code: {"description": text} for code, text in
              ((400, "Invalid request"), (404, "Unknown model"), (429, "Queue full"), (503, "Timed out"))}

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health", response_model=Health)
    async def health():
        b = service.batcher
        return Health(
            model=config.model_id, queued_requests=b.queued, running_batches=b.running,
            batches_run=b.batches_run, mean_batch_images=b.mean_batch_images,
        )

    @app.get("/v1/models", response_model=ModelList, dependencies=keyed)
    async def list_models():
        return ModelList(data=[service.card()])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses={404: errors[404]},
             dependencies=keyed)
    async def get_model(model_id: str):
        if model_id != config.model_id:
            raise APIError(404, f"The model {model_id!r} does not exist.", param="model", code="model_not_found")
        return service.card()

    @app.get("/v1/images/files/{name}", responses={404: {"description": "Unknown or expired image"}})
    async def get_file(name: str):
        item = service.store.get(name)
        if item is None:
            raise APIError(404, f"No image named {name!r} (unknown or expired).", code="not_found")
        return Response(content=item[0], media_type=item[1])

    @app.post(
        "/v1/images/generations",
        response_model=ImagesResponse,
        response_model_exclude_none=True,
        responses={**errors, 200: {"content": {"text/event-stream": {}}}},
        dependencies=keyed,
    )
    async def generate(body: ImageGenerationRequest, request: Request):
        job = service.build_job(body)
        fmt = body.output_format or "png"
        if body.stream:
            return _stream_response(service, job, body, fmt)
        images = await service.wait(job, service.submit(job))
        # PNG/JPEG encoding is CPU work: keep it off the event loop so other requests keep flowing.
        encoded_all = await asyncio.to_thread(
            lambda: [encode_image(image, fmt, body.output_compression) for image in images]
        )
        data = []
        for i, encoded in enumerate(encoded_all):
            if body.response_format == "url":
                name = service.store.put(encoded, fmt)
                data.append(ImageData(url=f"{str(request.base_url).rstrip('/')}/v1/images/files/{name}",
                                      seed=job.seed + i))
            else:
                data.append(ImageData(b64_json=base64.b64encode(encoded).decode(), seed=job.seed + i))
        size = job.settings.image_size
        return ImagesResponse(
            created=int(time.time()), data=data, size=f"{size}x{size}", output_format=fmt, usage=service.usage(job)
        )

    return app
