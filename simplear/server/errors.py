"""OpenAI-style error bodies, and the handlers that make every failure one of them.

Clients written for the OpenAI API read `{"error": {"message", "type", "param", "code"}}` and
decide on the status code; so does ours. Bad input is always a 4xx naming the field and what was
wrong with it: pydantic's validation errors, malformed JSON, unknown routes and methods are all
rewritten here, so no request can make the server answer with FastAPI's own 422 shape or a 5xx.
A 5xx is left only for real server faults (a bug, an overloaded queue, a timeout).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("simplear.server")


class APIError(Exception):
    """An error that becomes an HTTP response with an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 for a request that cannot be served as written."""
    return APIError(400, message, param=param, code=code)


def queue_full(retry_after_s: int) -> APIError:
    return APIError(
        429,
        f"The server is busy (generation queue full); retry in {retry_after_s} s.",
        type="rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(retry_after_s)},
    )


def timed_out(timeout_s: float, retry_after_s: int) -> APIError:
    return APIError(
        503,
        f"The request did not finish within the server's timeout of {timeout_s:g} s; retry later.",
        type="server_error",
        code="timeout",
        headers={"Retry-After": str(retry_after_s)},
    )


def _loc_to_param(loc: tuple | list) -> str | None:
    # pydantic locations look like ("body", "n") or ("body", "svg", "mode"); drop the "body" root.
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) if parts else None


def _describe_validation_error(err: dict[str, Any]) -> tuple[str, str | None]:
    kind = err.get("type", "")
    loc = err.get("loc", ())
    param = _loc_to_param(loc)
    if kind == "json_invalid":
        detail = err.get("ctx", {}).get("error", "")
        return f"The request body is not valid JSON ({detail}).".replace(" ()", ""), None
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if kind == "missing":
        if param is None:
            return "The request needs a JSON object body.", None
        return f"Missing required parameter: '{param}'.", param
    if param is None:
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return "The request body must be a JSON object (sent with Content-Type: application/json).", None
        return f"Invalid request body: {err.get('msg', 'invalid')}.", None
    value = err.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"Invalid value for '{param}': {err.get('msg', 'invalid')} (got {shown}).", param


def install_error_handlers(app) -> None:
    """Route every exception FastAPI can raise to an OpenAI-style JSON body."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        errors = list(exc.errors())
        message, param = _describe_validation_error(errors[0]) if errors else ("Invalid request.", None)
        if len(errors) > 1:
            message += f" ({len(errors) - 1} more problem(s) in the request.)"
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        kinds = {404: "not_found", 405: "method_not_allowed"}
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404:
            message = f"Unknown URL: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        return JSONResponse(
            error_body(message, code=kinds.get(exc.status_code)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        # A bug, not bad input: log the traceback, answer with a body clients can parse.
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(f"Internal server error: {type(exc).__name__}", type="server_error"),
            status_code=500,
        )
