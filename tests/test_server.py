"""The HTTP API on a fake pipeline: request validation, response shapes, batching, streaming.

The fake makes images of the right size whose colour is a function of (prompt, seed), records
every call, and reports progress with the codes sampled so far, like the real pipeline; the real
pipeline on a tiny random bundle is exercised in tests/test_server_real.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from simplear.server.app import ServerConfig, create_app  # noqa: E402
from simplear.server.batching import BatchingConfig  # noqa: E402


class FakeVisualTokenizer:
    downsample = 8
    codebook_size = 64
    kind = "fsq"

    def decode(self, codes):
        b, h, w = codes.shape
        value = (codes.float() / (self.codebook_size - 1)) * 2 - 1
        pixels = value[:, None].repeat(1, 3, 1, 1)
        return torch.nn.functional.interpolate(pixels, scale_factor=self.downsample, mode="nearest")


def colour(prompt: str, seed: int) -> tuple[int, int, int]:
    digest = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()
    return digest[0], digest[1], digest[2]


class FakePipeline:
    """Shaped like simplear.pipeline.Pipeline; `delay` seconds per call simulates sampling."""

    def __init__(self, image_size: int = 32, delay: float = 0.0):
        self.config = SimpleNamespace(
            image_size=image_size, sampling={"cfg_scale": 6.0, "temperature": 1.0, "top_k": None, "top_p": None}
        )
        self.visual_tokenizer = FakeVisualTokenizer()
        self.delay = delay
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, prompts, negative_prompt=None, num_images=1, image_size=None, cfg_scale=None,
                 temperature=None, top_k=None, top_p=None, seed=0, sampler="ar", progress=None):
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + i for i in range(len(prompts))]
        if any("REFUSE" in p for p in prompts):
            raise ValueError("prompt refused by the fake pipeline")
        with self.lock:
            self.calls.append(dict(prompts=prompts, seeds=seeds, cfg_scale=cfg_scale, image_size=image_size,
                                   sampler=sampler))
        size = image_size or self.config.image_size
        grid = size // self.visual_tokenizer.downsample
        codes = torch.stack([torch.full((grid * grid,), sum(colour(p, s)) % 64) for p, s in zip(prompts, seeds)])
        for step in range(1, grid * grid + 1):
            if progress is not None:
                progress(codes[:, :step], step, grid * grid)
            if self.delay:
                time.sleep(self.delay / (grid * grid))
        images = [Image.new("RGB", (size, size), colour(p, s)) for p, s in zip(prompts, seeds)]
        return SimpleNamespace(images=images, codes=codes.view(-1, grid, grid), stats={})


def make_client(pipe=None, **config) -> TestClient:
    return TestClient(create_app(pipe or FakePipeline(), ServerConfig(**config)))


def decode_b64(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_generation_returns_images_of_the_requested_size_and_seeds():
    pipe = FakePipeline()
    with make_client(pipe) as client:
        r = client.post("/v1/images/generations", json={"prompt": "two red circles", "n": 3, "seed": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["seed"] for d in body["data"]] == [7, 8, 9]
    images = [decode_b64(d["b64_json"]) for d in body["data"]]
    assert all(im.size == (32, 32) for im in images)
    assert images[1].getpixel((0, 0)) == colour("two red circles", 8)
    assert body["size"] == "32x32" and body["usage"]["output_tokens"] == 3 * 16
    assert pipe.calls[0]["seeds"] == [7, 8, 9]


def test_url_response_format_and_jpeg():
    with make_client() as client:
        r = client.post("/v1/images/generations",
                        json={"prompt": "a star", "response_format": "url", "output_format": "jpeg"})
        assert r.status_code == 200, r.text
        url = r.json()["data"][0]["url"]
        assert url.startswith("http://testserver/v1/images/files/")
        got = client.get(url.replace("http://testserver", ""))
        assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(got.content)).size == (32, 32)
        assert client.get("/v1/images/files/nope.png").status_code == 404


def test_models_health_openapi_and_page():
    with make_client(model_id="tiny", max_n=2) as client:
        models = client.get("/v1/models").json()
        assert models["object"] == "list" and models["data"][0]["id"] == "tiny"
        assert models["data"][0]["sizes"] == ["32x32"] and models["data"][0]["max_n"] == 2
        assert client.get("/v1/models/tiny").status_code == 200
        assert client.get("/v1/models/other").json()["error"]["code"] == "model_not_found"
        assert client.get("/health").json()["status"] == "ok"
        schema = client.get("/openapi.json").json()
        assert "/v1/images/generations" in schema["paths"]
        page = client.get("/")
        assert page.status_code == 200 and "<textarea" in page.text
        assert client.get("/static/app.js").status_code == 200


BAD_REQUESTS = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 5000}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({}, "prompt"),
    ({"prompt": "a", "n": 0}, "n"),
    ({"prompt": "a", "n": 99}, "n"),
    ({"prompt": "a", "n": "2"}, "n"),
    ({"prompt": "a", "n": 1.5}, "n"),
    ({"prompt": "a", "size": "big"}, "size"),
    ({"prompt": "a", "size": "32x64"}, "size"),
    ({"prompt": "a", "size": "1024x1024"}, "size"),
    ({"prompt": "a", "size": 32}, "size"),
    ({"prompt": "a", "cfg_scale": -1}, "cfg_scale"),
    ({"prompt": "a", "temperature": "hot"}, "temperature"),
    ({"prompt": "a", "top_p": 0}, "top_p"),
    ({"prompt": "a", "top_k": 10**6}, "top_k"),
    ({"prompt": "a", "seed": -1}, "seed"),
    ({"prompt": "a", "seed": 2**70}, "seed"),
    ({"prompt": "a", "sampler": "magic"}, "sampler"),
    ({"prompt": "a", "response_format": "gif"}, "response_format"),
    ({"prompt": "a", "wat": 1}, "wat"),
    ({"prompt": "a", "model": "dall-e-3"}, "model"),
    ({"prompt": "a", "partial_images": 2}, "partial_images"),
]


@pytest.mark.parametrize("payload,param", BAD_REQUESTS)
def test_bad_requests_are_4xx_with_an_openai_error_body(payload, param):
    with make_client() as client:
        r = client.post("/v1/images/generations", json=payload)
    assert 400 <= r.status_code < 500, (payload, r.status_code, r.text)
    error = r.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"null", b"", b'{"prompt": NaN}', b"\xff\xfe"])
def test_malformed_bodies_are_400(raw):
    with make_client() as client:
        r = client.post("/v1/images/generations", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "error" in r.json()


def test_pipeline_refusal_is_400_and_does_not_fail_the_rest_of_the_batch():
    pipe = FakePipeline(delay=0.05)
    with make_client(pipe, batching=BatchingConfig(max_wait_ms=200)) as client:
        results = {}

        def post(prompt):
            results[prompt] = client.post("/v1/images/generations", json={"prompt": prompt, "seed": 1})

        threads = [threading.Thread(target=post, args=(p,)) for p in ("fine", "REFUSE me", "also fine")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results["REFUSE me"].status_code == 400
    assert "refused" in results["REFUSE me"].json()["error"]["message"]
    assert results["fine"].status_code == 200 and results["also fine"].status_code == 200


def test_concurrent_requests_share_a_batch_but_not_across_settings():
    pipe = FakePipeline(delay=0.02)
    config = dict(batching=BatchingConfig(max_wait_ms=300, max_batch_images=16))
    with make_client(pipe, **config) as client:
        codes = {}

        def post(i):
            payload = {"prompt": f"p{i}", "seed": i, "cfg_scale": 3.0 if i % 2 else 5.0}
            codes[i] = client.post("/v1/images/generations", json=payload)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(r.status_code == 200 for r in codes.values())
    # Two settings -> two batches of three, never one mixed batch.
    assert sorted(len(c["prompts"]) for c in pipe.calls) == [3, 3]
    for call in pipe.calls:
        odd = {int(p[1:]) % 2 for p in call["prompts"]}
        assert len(odd) == 1 and call["cfg_scale"] == (3.0 if odd == {1} else 5.0)
    # Each image depends on its own seed only, not on its batch mates.
    for i, r in codes.items():
        assert decode_b64(r.json()["data"][0]["b64_json"]).getpixel((1, 1)) == colour(f"p{i}", i)


def test_full_queue_answers_429_with_retry_after_and_timeouts_503():
    pipe = FakePipeline(delay=0.6)
    batching = BatchingConfig(max_wait_ms=0, max_queue=1, max_batch_images=1, retry_after_s=3, timeout_s=0.3)
    with make_client(pipe, max_n=1, batching=batching) as client:
        statuses = []

        def post():
            r = client.post("/v1/images/generations", json={"prompt": "a"})
            statuses.append((r.status_code, r.headers.get("retry-after"), r.json()["error"]["code"]))

        threads = [threading.Thread(target=post) for _ in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join()
    codes = sorted(s[0] for s in statuses)
    assert 429 in codes and 503 in codes and max(codes) < 504
    assert all(s[1] == "3" for s in statuses)
    assert {s[2] for s in statuses} <= {"queue_full", "timeout"}


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_stream_sends_partial_images_then_completed():
    with make_client() as client:
        r = client.post("/v1/images/generations",
                        json={"prompt": "a heart", "n": 2, "seed": 3, "stream": True, "partial_images": 3})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    partial = [e for name, e in events if name == "image_generation.partial_image"]
    done = [e for name, e in events if name == "image_generation.completed"]
    # Grid of 4 rows: partials after rows 1, 2 and 3 for each of the two images.
    assert sorted((e["index"], e["rows_done"]) for e in partial) == [(i, r) for i in (0, 1) for r in (1, 2, 3)]
    assert [e["partial_image_index"] for e in partial if e["index"] == 0] == [0, 1, 2]
    first = decode_b64(partial[0]["b64_json"])
    assert first.size == (32, 32) and first.getpixel((0, 31)) == (128, 128, 128)
    assert [e["seed"] for e in done] == [3, 4]
    assert decode_b64(done[1]["b64_json"]).getpixel((0, 0)) == colour("a heart", 4)


def save_tiny_bundle(out_dir, image_size: int = 32):
    """A random tiny bundle (grid 4 x 4, codebook 16): real code paths, milliseconds per image."""
    from simplear.bundle import Bundle, make_bundle_config, save_bundle
    from simplear.model import build_model
    from simplear.visual_tokenizers import FSQAutoencoder, FSQAutoencoderConfig
    from simplear.vocab import Vocabulary, train_text_tokenizer

    captions = ["a photo of two red circles", "a blue square left of a green star", "a yellow heart"]
    tok = train_text_tokenizer(captions * 3, vocab_size=290)
    torch.manual_seed(0)
    vt = FSQAutoencoder(FSQAutoencoderConfig(levels=(4, 4), downsample=8, channels=(8, 8, 8, 8),
                                             res_blocks=(0, 0, 0, 0), norm_groups=8))
    vocab = Vocabulary(tok, vt.codebook_size)
    model = build_model("tiny", vocab.vocab_size, seed=0)
    return save_bundle(out_dir, Bundle(model, vocab, vt, make_bundle_config(vocab, vt, image_size, recipe="test")))


def make_pipeline(tmp_dir):
    """The pipeline the end-to-end server tests serve: the real one on a tiny random bundle."""
    from simplear.pipeline import Pipeline

    return Pipeline.from_pretrained(save_tiny_bundle(tmp_dir / "tiny"), device="cpu")


_SHARED: dict = {}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny model's matrices are too small to split across threads, and on a busy 2-core
    machine a second intra-op thread spin-waits: one call measured 0.055 s with 1 thread and
    3.5-7 s with 2. Modules that serve the real tiny pipeline import this fixture."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def shared_pipeline(tmp_path_factory):
    """One real tiny pipeline for every server/export/browser test module (building one costs
    seconds; the pipeline holds no per-request state, so sharing it is safe)."""
    if "pipe" not in _SHARED:
        _SHARED["pipe"] = make_pipeline(tmp_path_factory.mktemp("bundle"))
    return _SHARED["pipe"]


def test_serve_cli_builds_the_app_and_refuses_bad_flags(monkeypatch):
    from conftest import run_cli

    import simplear.pipeline
    import simplear.server.run as run

    served = {}
    monkeypatch.setattr(simplear.pipeline.Pipeline, "from_pretrained",
                        classmethod(lambda cls, path=None, visual_tokenizer=None, device=None: FakePipeline()))
    monkeypatch.setattr(run, "run_server", lambda app, host, port, allow_public: served.update(app=app, port=port))
    assert run_cli("serve", "--port", "0", "--model-id", "m", "--max-n", "2", "--max-wait-ms", "5") == 0
    service = served["app"].state.service
    assert served["port"] == 0 and service.config.model_id == "m" and service.config.max_n == 2
    assert service.config.batching.max_wait_ms == 5 and service.config.api_key is None
    monkeypatch.setenv("SIMPLEAR_API_KEY", "from-the-environment")
    assert run_cli("serve") == 0
    assert served["app"].state.service.config.api_key == "from-the-environment"
    assert run_cli("serve", "--host", "0.0.0.0") == 2  # no authentication: loopback unless --allow-public
    assert run_cli("serve", "--max-n", "40") == 2  # above the batch size
    assert run_cli("serve", "--sizes", "30") == 2  # not a multiple of the tokenizer's 8


def test_api_key_guards_the_api_but_not_the_page_or_health():
    with make_client(api_key="s3cret-key") as client:
        r = client.post("/v1/images/generations", json={"prompt": "a"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer nope"}
        assert client.get("/v1/models", headers=wrong).status_code == 401
        # The key is checked before the body: no hint about the body's validity without it.
        assert client.post("/v1/images/generations", json={"n": "x"}).status_code == 401
        good = {"Authorization": "Bearer s3cret-key"}
        assert client.post("/v1/images/generations", json={"prompt": "a"}, headers=good).status_code == 200
        assert client.get("/v1/models", headers=good).status_code == 200
        assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
    with pytest.raises(ValueError, match="8 characters"):
        ServerConfig(api_key="short")
