"""The batcher on its own: batch limits, FIFO across settings, cancellation, shutdown, checkpoints."""

from __future__ import annotations

import threading
import time

import pytest
from test_server import FakePipeline

from simplear.server.batching import Batcher, BatchingConfig, ImageJob, JobCancelled, QueueFull
from simplear.server.pipeline_adapter import SamplingSettings, checkpoints

A = SamplingSettings(image_size=32, cfg_scale=2.0)
B = SamplingSettings(image_size=32, cfg_scale=4.0)


def job(prompt: str, n: int = 1, settings: SamplingSettings = A, seed: int = 0) -> ImageJob:
    return ImageJob(prompt=prompt, n=n, seed=seed, settings=settings)


class GatedPipeline(FakePipeline):
    """Blocks each call until released, so a test can pile up requests while a batch runs."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.started = threading.Event()

    def __call__(self, *args, **kwargs):
        self.started.set()
        assert self.gate.wait(10)
        return super().__call__(*args, **kwargs)


def test_queued_jobs_batch_by_settings_and_size_limit():
    pipe = GatedPipeline()
    batcher = Batcher(pipe, BatchingConfig(max_batch_images=4, max_wait_ms=0, max_queue=10))
    first = batcher.submit(job("first"))
    assert pipe.started.wait(5)  # the first batch is running; the rest queue up behind it
    jobs = [job("a1", 2), job("b1", 1, B), job("a2", 1), job("a3", 2), job("b2", 3, B)]
    futures = [batcher.submit(j) for j in jobs]
    pipe.gate.set()
    for f in [first, *futures]:
        assert len(f.result(10)) in (1, 2, 3)
    batcher.close()
    batches = [c["prompts"] for c in pipe.calls]
    # FIFO by the oldest waiting job; only equal settings share a batch; never above 4 images.
    assert batches == [["first"], ["a1", "a1", "a2"], ["b1", "b2", "b2", "b2"], ["a3", "a3"]]
    assert batcher.batches_run == 4 and batcher.mean_batch_images == 10 / 4
    assert [j.batch_images for j in jobs] == [3, 4, 3, 2, 4]


def test_cancelled_jobs_never_run_and_full_queue_refuses():
    pipe = GatedPipeline()
    batcher = Batcher(pipe, BatchingConfig(max_batch_images=4, max_wait_ms=0, max_queue=2))
    batcher.submit(job("running"))
    assert pipe.started.wait(5)
    dropped, kept = job("dropped"), job("kept")
    batcher.submit(dropped)
    batcher.submit(kept)
    with pytest.raises(QueueFull):
        batcher.submit(job("one too many"))
    dropped.cancel()
    pipe.gate.set()
    assert len(kept.future.result(10)) == 1
    batcher.close()
    assert all("dropped" not in c["prompts"] for c in pipe.calls)
    with pytest.raises(ValueError, match="batch limit"):
        Batcher(pipe, BatchingConfig(max_batch_images=2)).submit(job("big", 3))


def test_close_fails_queued_jobs_and_refuses_new_ones():
    pipe = GatedPipeline()
    batcher = Batcher(pipe, BatchingConfig(max_wait_ms=0))
    running = batcher.submit(job("running"))
    assert pipe.started.wait(5)
    queued = batcher.submit(job("queued", settings=B))
    threading.Timer(0.2, pipe.gate.set).start()
    batcher.close()
    assert len(running.result(10)) == 1  # the running batch finishes
    with pytest.raises(JobCancelled):
        queued.result(1)
    with pytest.raises(JobCancelled):
        batcher.submit(job("late"))
    batcher.open()  # a new lifespan accepts work again
    assert len(batcher.submit(job("again")).result(10)) == 1
    batcher.close()


def test_wait_gathers_company_when_idle():
    pipe = FakePipeline()
    batcher = Batcher(pipe, BatchingConfig(max_batch_images=8, max_wait_ms=300))
    started = time.monotonic()
    futures = [batcher.submit(job(f"p{i}")) for i in range(3)]
    for f in futures:
        f.result(10)
    batcher.close()
    assert [len(c["prompts"]) for c in pipe.calls] == [3]
    assert time.monotonic() - started >= 0.25  # waited for company, but not past the bound by much


def test_checkpoints_spread_partial_images_over_rows():
    assert checkpoints(3, 4) == [1, 2, 3]
    assert checkpoints(1, 8) == [4]
    assert checkpoints(8, 4) == [1, 2, 3]  # never more partials than rows before the end
    assert checkpoints(0, 8) == []
    with pytest.raises(ValueError):
        BatchingConfig(max_queue=0)


def test_after_a_batch_queued_jobs_wait_for_the_clients_it_answered():
    pipe = FakePipeline(delay=0.4)
    batcher = Batcher(pipe, BatchingConfig(max_batch_images=8, max_wait_ms=5, regroup_fraction=0.5))
    first = batcher.submit(job("first"))
    time.sleep(0.1)
    queued = batcher.submit(job("queued"))  # arrives while "first" runs

    def come_back(_):  # the answered client sends its next request 50 ms later
        threading.Timer(0.05, lambda: batcher.submit(job("returning"))).start()

    first.add_done_callback(come_back)
    queued.result(10)
    batcher.close()
    # Without the regroup window (0.5 x 0.4 s) "queued" would have run alone after 5 ms.
    assert [sorted(c["prompts"]) for c in pipe.calls] == [["first"], ["queued", "returning"]]
