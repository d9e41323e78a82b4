"""Load benchmark of the HTTP server: throughput and latency at rising concurrency.

Starts the real app under uvicorn on loopback, then for each concurrency level C runs C
closed-loop clients (each sends one request, waits for the answer, sends the next) until
`requests_per_level` answers came back or `seconds_per_level` passed. Reports images/s, p50 and
p95 latency, and the mean batch size the batcher reached at that level: with dynamic batching,
throughput should rise with C while one client alone is not slowed down.

    python -m simplear.bench_serving [--model PATH] [--levels 1 8 32] [--requests 64] [--seconds 60]

Prints a table and one JSON line. Bounded in count and time; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ServingBenchConfig:
    levels: tuple[int, ...] = (1, 8, 32)
    requests_per_level: int = 64  # answers to wait for at each level (at least one per client)
    seconds_per_level: float = 60.0  # no new request is sent after this
    warmup_requests: int = 2
    prompt: str = "a photo of two red circles"
    n: int = 1
    max_batch_images: int = 32
    max_wait_ms: float = 20.0
    regroup_fraction: float = 0.1
    request_body: dict = field(default_factory=dict)  # extra fields (cfg_scale, sampler, ...)

    def __post_init__(self):
        if not self.levels or any(c < 1 for c in self.levels):
            raise ValueError(f"levels must be positive client counts, got {self.levels}")
        if self.requests_per_level < 1 or self.seconds_per_level <= 0:
            raise ValueError("requests_per_level must be >= 1 and seconds_per_level > 0")


def _run_level(base_url: str, clients: int, config: ServingBenchConfig, service) -> dict:
    import httpx

    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    issued = [0]
    deadline = time.monotonic() + config.seconds_per_level
    body = {"prompt": config.prompt, "n": config.n, **config.request_body}

    def client(index: int) -> None:
        with httpx.Client(base_url=base_url, timeout=600) as http:
            while True:
                with lock:
                    if issued[0] >= max(config.requests_per_level, clients) or time.monotonic() > deadline:
                        return
                    seed = issued[0]
                    issued[0] += 1
                started = time.perf_counter()
                response = http.post("/v1/images/generations", json={**body, "seed": seed})
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        failures.append(f"{response.status_code}: {response.text[:200]}")

    batches0, images0 = service.batcher.batches_run, service.batcher.images_run
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    batches = service.batcher.batches_run - batches0
    images = service.batcher.images_run - images0
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {
        "clients": clients,
        "requests": len(latencies),
        "failed": len(failures),
        "first_failure": failures[0] if failures else None,
        "seconds": round(wall, 3),
        "images_per_s": len(latencies) * config.n / wall,
        "p50_s": float(np.percentile(lat, 50)),
        "p95_s": float(np.percentile(lat, 95)),
        "mean_batch_images": images / batches if batches else 0.0,
    }


def bench_serving(pipeline, config: ServingBenchConfig | None = None, log=print) -> dict:
    """Serve `pipeline` on loopback and measure each concurrency level; returns the results."""
    import httpx

    from simplear.server.app import ServerConfig, create_app
    from simplear.server.batching import BatchingConfig
    from simplear.server.run import background_server

    config = config or ServingBenchConfig()
    most = max(config.levels)
    batching = BatchingConfig(max_batch_images=config.max_batch_images, max_wait_ms=config.max_wait_ms,
                              regroup_fraction=config.regroup_fraction, max_queue=max(64, 2 * most), timeout_s=600)
    app = create_app(pipeline, ServerConfig(max_n=min(config.n, config.max_batch_images), batching=batching))
    service = app.state.service
    results = []
    with background_server(app) as base_url:
        with httpx.Client(base_url=base_url, timeout=600) as http:
            for i in range(config.warmup_requests):  # first calls pay one-off costs (allocations, caches)
                http.post("/v1/images/generations", json={"prompt": config.prompt, "seed": i}).raise_for_status()
        for clients in config.levels:
            row = _run_level(base_url, clients, config, service)
            results.append(row)
            log(f"{clients:>7} {row['requests']:>8} {row['images_per_s']:>9.3f} {row['p50_s']:>8.3f} "
                f"{row['p95_s']:>8.3f} {row['mean_batch_images']:>10.2f}"
                + (f"  ({row['failed']} failed: {row['first_failure']})" if row["failed"] else ""))
    return {"config": asdict(config), "levels": results}


def random_bundle(out_dir, preset: str = "shapes", image_size: int = 128, seed: int = 0):
    """A randomly initialised bundle with a preset's architecture and the default FSQ tokenizer:
    its images are noise, but it costs exactly what a trained model of that shape costs."""
    import torch

    from simplear.bundle import Bundle, make_bundle_config, save_bundle
    from simplear.model import build_model
    from simplear.visual_tokenizers import FSQAutoencoder, FSQAutoencoderConfig
    from simplear.vocab import Vocabulary, train_text_tokenizer

    captions = ["a photo of two red circles", "a blue square left of a green star", "four yellow hearts"]
    tok = train_text_tokenizer(captions * 4, vocab_size=300)
    torch.manual_seed(seed)
    vt = FSQAutoencoder(FSQAutoencoderConfig())
    vocab = Vocabulary(tok, vt.codebook_size)
    model = build_model(preset, vocab.vocab_size, seed=seed)
    config = make_bundle_config(vocab, vt, image_size, benchmark=f"random {preset}")
    return save_bundle(out_dir, Bundle(model, vocab, vt, config))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags (shared by `simplear bench serving` and `python -m simplear.bench_serving`)."""
    parser.add_argument("--model", default=None, help="model bundle (default: the embedded model)")
    parser.add_argument("--visual-tokenizer", default=None)
    parser.add_argument("--random-preset", default=None,
                        help="instead of --model: a random bundle of this model preset (speed only)")
    parser.add_argument("--image-size", type=int, default=128, help="image size of --random-preset")
    parser.add_argument("--device", default=None)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=64, help="answers per level")
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound per level")
    parser.add_argument("--max-batch-images", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument("--regroup-fraction", type=float, default=0.1)
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed flags; prints a table and a JSON line."""
    import torch

    from simplear.pipeline import Pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    config = ServingBenchConfig(levels=tuple(args.levels), requests_per_level=args.requests,
                                seconds_per_level=args.seconds, max_batch_images=args.max_batch_images,
                                max_wait_ms=args.max_wait_ms, regroup_fraction=args.regroup_fraction,
                                request_body={"sampler": args.sampler} if args.sampler else {})
    model, scratch = args.model, None
    if args.random_preset:
        import tempfile

        scratch = tempfile.TemporaryDirectory(prefix="simplear-bench-")
        model = random_bundle(Path(scratch.name) / "bundle", args.random_preset, args.image_size)
    pipeline = Pipeline.from_pretrained(model, visual_tokenizer=args.visual_tokenizer, device=args.device)
    print(f"model: {args.random_preset and 'random ' + args.random_preset or model or 'embedded default'}, "
          f"{pipeline.config.image_size}px, device {pipeline.device}, torch threads {torch.get_num_threads()}")
    print(f"{'clients':>7} {'requests':>8} {'images/s':>9} {'p50 s':>8} {'p95 s':>8} {'mean batch':>10}")
    try:
        result = bench_serving(pipeline, config)
    finally:
        if scratch is not None:
            scratch.cleanup()
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simplear.bench_serving", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
