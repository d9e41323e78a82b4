"""`simplear serve`: the OpenAI-compatible image API and the web page, on loopback by default."""

from __future__ import annotations


def register(top, groups) -> None:
    p = top.add_parser(
        "serve",
        help="serve a model over HTTP (OpenAI Images API + web page)",
        description="Serve a model bundle: POST /v1/images/generations (OpenAI-compatible), "
        "GET /v1/models, GET /health, the web page at /, OpenAPI at /openapi.json.",
    )
    p.add_argument("--model", default=None, help="model bundle or released SimpleAR folder (default: embedded)")
    p.add_argument("--visual-tokenizer", default=None, help="visual tokenizer folder (overrides the bundle's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--allow-public", action="store_true", help="allow binding a non-loopback address")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1 (default: $SIMPLEAR_API_KEY; none if unset)")
    p.add_argument("--model-id", default="simplear", help="model name reported by /v1/models")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="square image sizes offered (default: the model's native size)")
    p.add_argument("--max-n", type=int, default=4, help="most images per request")
    p.add_argument("--max-prompt-chars", type=int, default=2000)
    p.add_argument("--max-batch-images", type=int, default=16, help="images per sampler batch")
    p.add_argument("--max-wait-ms", type=float, default=20.0, help="how long a request waits for batch mates")
    p.add_argument("--regroup-fraction", type=float, default=0.1,
                   help="after a batch, wait up to this fraction of its duration for the clients it answered")
    p.add_argument("--max-queue", type=int, default=64, help="queued requests before answering 429")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    import os

    from simplear.server.app import ServerConfig
    from simplear.server.batching import BatchingConfig
    from simplear.server.run import serve

    batching = BatchingConfig(max_batch_images=args.max_batch_images, max_wait_ms=args.max_wait_ms,
                              regroup_fraction=args.regroup_fraction, max_queue=args.max_queue,
                              timeout_s=args.timeout)
    config = ServerConfig(model_id=args.model_id, sizes=tuple(args.sizes or ()), max_n=args.max_n,
                          max_prompt_chars=args.max_prompt_chars, batching=batching,
                          api_key=args.api_key or os.environ.get("SIMPLEAR_API_KEY") or None)
    serve(args.model, visual_tokenizer=args.visual_tokenizer, device=args.device, host=args.host,
          port=args.port, config=config, allow_public=args.allow_public)
    return 0
