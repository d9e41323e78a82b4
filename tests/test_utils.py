"""Atomic writes: the result appears whole or not at all, with the mode any new file would get."""

import os
import stat

import pytest

import simplear.utils as utils
from simplear.utils import atomic_dir, atomic_path, atomic_write_text, uses_bf16_autocast


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_folders_get_the_umask_mode_not_private(tmp_path, umask_027):
    atomic_write_text(tmp_path / "a.json", "{}")
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "inside.txt").write_text("y")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "private.safetensors").write_bytes(b"w")
        os.chmod(tmp / "sub" / "private.safetensors", 0o600)  # what save_pretrained leaves
    assert mode(tmp_path / "a.json") == 0o640 and mode(tmp_path / "b.bin") == 0o640
    assert mode(tmp_path / "folder") == 0o750
    assert mode(tmp_path / "folder" / "sub" / "private.safetensors") == 0o640


def test_safetensors_written_through_atomic_path_get_the_umask_mode(tmp_path, umask_027):
    import torch
    from safetensors.torch import save_file

    with atomic_path(tmp_path / "model.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    assert mode(tmp_path / "model.safetensors") == 0o640


def test_a_failed_write_leaves_neither_result_nor_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.png") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "run") as tmp:
            (tmp / "part").write_text("half")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_format_down_never_prints_above_the_measured_figure():
    from simplear.utils import format_down

    assert format_down(7.996, 2) == "7.99"  # rounding would claim 8.00
    assert format_down(0.29, 2) == "0.29"  # 0.29 * 100 is 28.999... in floats
    assert format_down(0.30265, 4) == "0.3026"
    assert format_down(1966.72, 1) == "1966.7"
    assert format_down(256.0, 0) == "256"
    assert format_down(-0.0051, 3) == "-0.006"  # toward -inf


@pytest.mark.parametrize("flags, native", [("fpu avx2 avx512f avx512_bf16 fma", True),
                                           ("fpu avx2 amx_bf16 amx_tile", True),
                                           ("fpu avx2 avx512f avx512bw fma", False)])
def test_auto_precision_takes_bf16_only_where_the_cpu_multiplies_it_natively(monkeypatch, tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n")
    monkeypatch.setattr(utils, "CPUINFO", cpuinfo)
    utils.cpu_has_native_bf16.cache_clear()
    try:
        assert utils.cpu_has_native_bf16() is native
        assert uses_bf16_autocast("auto", "cpu") is native
        assert uses_bf16_autocast("auto", "cuda") is True
        assert uses_bf16_autocast("fp32", "cuda") is False
        assert uses_bf16_autocast("bf16", "cpu") is True
    finally:
        utils.cpu_has_native_bf16.cache_clear()
