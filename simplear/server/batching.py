"""Dynamic batching: concurrent requests become one sampler batch.

An autoregressive sampler costs about the same per forward pass for 1 row as for 16 on a GPU
(and much less than 16 separate passes on a CPU), so serving one request at a time wastes the
machine. One worker thread owns the pipeline. Requests wait in a bounded FIFO queue; the worker
takes the oldest, then gathers every queued request with the *same sampling settings* (size,
negative prompt, CFG scale, temperature, top-k, top-p, sampler) until the batch holds
`max_batch_images` images or the oldest request has waited `max_wait_ms`. Requests with other
settings wait for a later batch: the samplers take one setting per batch, and mixing would
silently change someone's image. Each image carries its own seed, so an image does not depend
on which other requests shared its batch.

While a batch runs, new requests queue up. When it ends, the clients it answered send their
next request some milliseconds later; if the next batch started at once they would always miss
it, and under steady load the clients would split into groups that take turns (seen in the
benchmark: 8 clients, batches of 4). So a request that queued behind a batch waits, counted from
the end of that batch, for `max_wait_ms` or `regroup_fraction` of the batch's duration, whichever
is longer (a slow batch makes a longer round trip worth waiting for): the groups merge into one
batch for at most 10% more latency by default. Throughput rises with load, and a request that
finds the worker idle waits at most `max_wait_ms`. A full queue refuses new work (`QueueFull`, which the app turns into
429 + Retry-After) instead of growing without bound.

This module knows nothing of HTTP; `simplear.bench_serving` and the tests drive it directly too.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from simplear.server.pipeline_adapter import SamplingSettings, run_pipeline

logger = logging.getLogger("simplear.server")

# (image index within the job, partial index, rows done, rows total, PIL image)
PartialCallback = Callable[[int, int, int, int, object], None]


class QueueFull(Exception):
    """The bounded request queue is full; the caller should retry later."""


class JobCancelled(Exception):
    """The job was cancelled (timed out or its client left) before it ran."""


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are gathered. Defaults suit a small model on a CPU or one GPU."""

    max_batch_images: int = 16  # images (rows of the sampler batch, before CFG doubling)
    max_wait_ms: float = 20.0  # how long the oldest request may wait for company
    # After a batch, wait up to this fraction of its duration (if longer than max_wait_ms) for the
    # clients it answered to send their next request, so they join the next batch.
    regroup_fraction: float = 0.1
    max_queue: int = 64  # requests waiting (not running); beyond this: QueueFull
    timeout_s: float = 600.0  # per request, from submission to result
    retry_after_s: int = 2  # advertised in Retry-After when refusing

    def __post_init__(self):
        if self.max_batch_images < 1:
            raise ValueError(f"max_batch_images must be >= 1, got {self.max_batch_images}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not 0 <= self.regroup_fraction <= 1:
            raise ValueError(f"regroup_fraction must be in [0, 1], got {self.regroup_fraction}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retry_after_s < 1:
            raise ValueError(f"retry_after_s must be >= 1, got {self.retry_after_s}")


@dataclass(eq=False)
class ImageJob:
    """One request: `n` images of one prompt, seeds `seed .. seed + n - 1`."""

    prompt: str
    n: int
    seed: int
    settings: SamplingSettings
    partial_images: int = 0
    on_partial: PartialCallback | None = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    submitted_at: float = field(default_factory=time.monotonic)
    batch_images: int = 0  # size of the batch it ran in (for stats and benchmarks)

    def cancel(self) -> None:
        """Drop the job if it has not started; a running batch finishes but its result is dropped."""
        self.future.cancel()


class Batcher:
    """Owns the pipeline and the one worker thread that runs it."""

    def __init__(self, pipeline, config: BatchingConfig | None = None):
        self.pipeline = pipeline
        self.config = config or BatchingConfig()
        self._queue: collections.deque[ImageJob] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._free_since = 0.0  # when the worker last finished a batch (monotonic seconds)
        self._last_batch_s = 0.0  # how long that batch took
        self.batches_run = 0
        self.images_run = 0
        self.running = 0

    # -- public API -------------------------------------------------------------------------
    def submit(self, job: ImageJob) -> concurrent.futures.Future:
        """Queue `job`; its future resolves to a list of `n` PIL images (or raises)."""
        if job.n > self.config.max_batch_images:
            raise ValueError(f"n={job.n} is above the batch limit of {self.config.max_batch_images} images")
        with self._cond:
            if self._closed:
                raise JobCancelled("the server is shutting down")
            if len(self._queue) >= self.config.max_queue:
                raise QueueFull(f"{len(self._queue)} requests already queued")
            self._ensure_thread()
            self._queue.append(job)
            self._cond.notify_all()
        return job.future

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def mean_batch_images(self) -> float:
        return self.images_run / self.batches_run if self.batches_run else 0.0

    def open(self) -> None:
        """Accept jobs again after `close` (an ASGI app may see several lifespans)."""
        with self._cond:
            self._closed = False

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker after the running batch; queued jobs fail with JobCancelled."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(JobCancelled("the server is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)

    # -- worker -----------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="simplear-batcher", daemon=True)
            self._thread.start()

    def _next_batch(self) -> list[ImageJob] | None:
        """Block until a batch is ready: the oldest job plus compatible ones, or None when closed."""
        cfg = self.config
        with self._cond:
            while True:
                while self._queue and self._queue[0].future.cancelled():
                    self._queue.popleft()  # timed out while queued: never run it
                if self._closed:
                    return None
                if not self._queue:
                    self._cond.wait()
                    continue
                head = self._queue[0]
                compatible = sum(
                    j.n for j in self._queue if j.settings == head.settings and not j.future.cancelled()
                )
                if head.submitted_at >= self._free_since:  # arrived at an idle worker
                    waited, budget = time.monotonic() - head.submitted_at, cfg.max_wait_ms / 1000.0
                else:  # queued behind a batch: give the clients it just answered time to come back
                    waited = time.monotonic() - self._free_since
                    budget = max(cfg.max_wait_ms / 1000.0, cfg.regroup_fraction * self._last_batch_s)
                remaining = budget - waited
                if compatible >= cfg.max_batch_images or remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, images, keep = [], 0, collections.deque()
            for job in self._queue:
                fits = images + job.n <= cfg.max_batch_images
                if job.settings == head.settings and fits and not job.future.cancelled():
                    batch.append(job)
                    images += job.n
                elif not job.future.cancelled():
                    keep.append(job)
            self._queue = keep
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            # A job cancelled between selection and now is dropped here; the rest are marked running.
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            self.running += 1
            started = time.monotonic()
            try:
                self._run(batch)
            finally:
                self.running -= 1
                self._free_since = time.monotonic()
                self._last_batch_s = self._free_since - started

    def _run(self, batch: list[ImageJob]) -> None:
        images = sum(job.n for job in batch)
        try:
            results = run_pipeline(self.pipeline, batch)
        except ValueError as err:
            if len(batch) == 1:
                batch[0].future.set_exception(err)
                return
            # One request's input was refused by the pipeline: run each alone so that only the
            # request at fault gets the error and the others still get their images.
            logger.info("batch of %d refused (%s); retrying requests one by one", len(batch), err)
            for job in batch:
                self._run_alone(job)
            return
        except BaseException as err:  # a bug: every job in the batch must still get an answer
            logger.exception("batch of %d images failed", images)
            for job in batch:
                job.future.set_exception(err)
            return
        self.batches_run += 1
        self.images_run += images
        for job, result in zip(batch, results):
            job.batch_images = images
            job.future.set_result(result)

    def _run_alone(self, job: ImageJob) -> None:
        try:
            (result,) = run_pipeline(self.pipeline, [job])
        except BaseException as err:
            job.future.set_exception(err)
            return
        self.batches_run += 1
        self.images_run += job.n
        job.batch_images = job.n
        job.future.set_result(result)
