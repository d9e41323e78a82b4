"""Schemathesis fuzzes the API from its own OpenAPI document: no input may give a 5xx.

Runs in-process over ASGI on the real pipeline (tiny random bundle), so prompts that reach the
tokenizer and sampler are fuzzed too, with a bounded number of examples per operation, both
schema-valid and schema-violating ones.
"""

from __future__ import annotations

import json

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from test_server import one_torch_thread, shared_pipeline  # noqa: E402, F401

from simplear.server.app import ServerConfig, create_app  # noqa: E402
from simplear.server.batching import BatchingConfig  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    app = create_app(shared_pipeline(tmp_path_factory), ServerConfig(max_n=2, batching=BatchingConfig(max_wait_ms=0)))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


SCHEMA = schemathesis.pytest.from_fixture("api_schema")


@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_gives_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, (case.body, response.status_code, response.text[:500])
    if response.status_code >= 400:
        error = json.loads(response.text)["error"]
        assert isinstance(error["message"], str) and error["message"]
