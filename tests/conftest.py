"""Shared test settings.

One torch thread: the tests use tiny models, for which a second thread only adds spin-waiting
(measured: one tiny-model call 0.055 s with 1 thread against 3.5-7 s with 2 on a busy 2-core box).
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "benchmarks").is_dir():
        pytest.skip("../shared/benchmarks is not beside this checkout")
    return SHARED


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


def run_cli(*args: str) -> int:
    """Run `simplear ARGS` in-process; returns the exit code."""
    from simplear.cli import main

    return main([str(a) for a in args])


sys.path.insert(0, str(Path(__file__).parent))
