"""The official `openai` client, unchanged, against a real uvicorn server on loopback.

Non-streaming (b64_json and url) and streaming (partial images, then the completed image) calls;
the error path raises the client's own exception types with our message.
"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from test_server import one_torch_thread, shared_pipeline  # noqa: E402, F401

from simplear.server.app import ServerConfig, create_app  # noqa: E402
from simplear.server.run import background_server  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    pipe = shared_pipeline(tmp_path_factory)
    app = create_app(pipe, ServerConfig(model_id="tiny", max_n=2))
    with background_server(app) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)
        yield client, base_url, pipe


def size_of(pipe) -> int:
    return int(pipe.config.image_size)


def test_images_generate_b64_and_url(served):
    client, _, pipe = served
    size = size_of(pipe)
    result = client.images.generate(prompt="a photo of two red circles", n=2, size=f"{size}x{size}",
                                    response_format="b64_json", extra_body={"seed": 5, "cfg_scale": 2.0})
    assert len(result.data) == 2
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in result.data]
    assert all(im.size == (size, size) for im in images)
    again = client.images.generate(prompt="a photo of two red circles", n=1, model="tiny",
                                   extra_body={"seed": 5, "cfg_scale": 2.0})
    # The same seed reproduces the same image, whatever shared its batch.
    assert again.data[0].b64_json == result.data[0].b64_json

    via_url = client.images.generate(prompt="a blue star", response_format="url")
    import httpx

    fetched = httpx.get(via_url.data[0].url, timeout=30)
    assert fetched.status_code == 200
    assert Image.open(io.BytesIO(fetched.content)).size == (size, size)


@pytest.mark.parametrize("sampler", ["ar", "reference", "jacobi"])
def test_images_generate_stream(served, sampler):
    client, _, pipe = served
    events = list(client.images.generate(prompt="a green heart", stream=True, partial_images=2,
                                         extra_body={"seed": 1, "sampler": sampler}))
    kinds = [e.type for e in events]
    # Up to 2 partial images: Jacobi decoding may accept several rows in one step.
    assert 1 <= kinds.count("image_generation.partial_image") <= 2
    assert kinds[-1] == "image_generation.completed"
    final = Image.open(io.BytesIO(base64.b64decode(events[-1].b64_json)))
    assert final.size == (size_of(pipe), size_of(pipe))
    # Streaming (and its partial decodes) does not change the image a seed gives.
    plain = client.images.generate(prompt="a green heart", extra_body={"seed": 1, "sampler": sampler})
    assert plain.data[0].b64_json == events[-1].b64_json


def test_errors_surface_as_openai_exceptions(served):
    client, _, _ = served
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(prompt="a circle", n=99)
    assert "limit" in err.value.message and err.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError):
        client.images.generate(prompt="a circle", model="dall-e-3")
    assert client.models.list().data[0].id == "tiny"


def test_prompt_longer_than_the_context_is_a_400(served):
    from fastapi.testclient import TestClient

    _, _, pipe = served
    app = create_app(pipe, ServerConfig(max_prompt_chars=20_000))
    with TestClient(app) as client:
        r = client.post("/v1/images/generations", json={"prompt": "x" * 10_000})
        assert r.status_code == 400, r.text
        assert "context" in r.json()["error"]["message"]
        assert client.post("/v1/images/generations", json={"prompt": "a red star"}).status_code == 200


def test_openai_client_with_an_api_key(served):
    _, _, pipe = served
    app = create_app(pipe, ServerConfig(model_id="tiny", api_key="client-key-1"))
    with background_server(app) as base_url:
        good = openai.OpenAI(base_url=f"{base_url}/v1", api_key="client-key-1", max_retries=0, timeout=120)
        assert len(good.images.generate(prompt="a red circle").data) == 1
        bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong-key-00", max_retries=0, timeout=120)
        with pytest.raises(openai.AuthenticationError):
            bad.images.generate(prompt="a red circle")
