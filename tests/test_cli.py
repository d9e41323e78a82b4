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
