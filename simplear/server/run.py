"""Running the app with uvicorn: in the foreground (`simplear serve`) or in a background thread.

The background form binds port 0 (the OS picks a free port) and yields the base URL, so tests,
the load benchmark and notebooks get a real HTTP server on loopback without racing for ports.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time
from collections.abc import Iterator

logger = logging.getLogger("simplear.server")


def _check_host(host: str, allow_public: bool) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not allow_public:
        raise ValueError(
            f"refusing to bind {host!r}: serving beyond this machine needs allow_public=True "
            "(CLI: --allow-public), and should have an API key (--api-key or SIMPLEAR_API_KEY)"
        )


def run_server(app, host: str = "127.0.0.1", port: int = 8000, allow_public: bool = False,
               log_level: str = "info") -> None:
    """Serve `app` until interrupted."""
    import uvicorn

    _check_host(host, allow_public)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in [0, 65535], got {port}")
    uvicorn.run(app, host=host, port=port, log_level=log_level)


@contextlib.contextmanager
def background_server(app, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0,
                      log_level: str = "warning") -> Iterator[str]:
    """Serve `app` in a thread; yields "http://host:port"; stops the server on exit."""
    import uvicorn

    _check_host(host, allow_public=False)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="simplear-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server thread stopped during startup (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server did not start within {startup_timeout:g} s")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def serve(model: str | None = None, visual_tokenizer: str | None = None, device: str | None = None,
          host: str = "127.0.0.1", port: int = 8000, config=None, allow_public: bool = False) -> None:
    """Load a model bundle (None = the embedded default) and serve it until interrupted."""
    _check_host(host, allow_public)  # before the (slow) model load
    from simplear.pipeline import Pipeline
    from simplear.server.app import ServerConfig, create_app

    pipeline = Pipeline.from_pretrained(model, visual_tokenizer=visual_tokenizer, device=device)
    config = config or ServerConfig()
    print(f"simplear: serving {config.model_id} at http://{host}:{port}/ (API under /v1, docs at /docs)", flush=True)
    run_server(create_app(pipeline, config), host=host, port=port, allow_public=allow_public)
