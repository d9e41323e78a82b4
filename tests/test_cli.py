import subprocess
import sys


def test_help_lists_verb_groups():
    out = subprocess.run([sys.executable, "-m", "simplear", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for verb in ("data", "train", "eval", "bench"):
        assert verb in out.stdout


def test_import_is_light():
    code = "import sys, simplear; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bench_serving_verb_takes_the_benchmark_flags():
    from simplear.cli import build_parser

    args = build_parser().parse_args(["bench", "serving", "--levels", "1", "8", "--requests", "3"])
    assert args.levels == [1, 8] and args.requests == 3 and args.func.__name__ == "_run_serving"


def test_keep_freed_memory_applies_on_glibc():
    import platform

    from simplear.utils import keep_freed_memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected
    assert keep_freed_memory() is expected  # idempotent: the CLI may call it more than once


def test_keep_freed_memory_can_be_switched_off(monkeypatch):
    from simplear.utils import keep_freed_memory

    monkeypatch.setenv("SIMPLEAR_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
