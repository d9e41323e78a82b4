"""torchrun with 2 CPU processes (DDP over gloo) matches 1 process at the same global batch."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from simplear.train.logging import read_log

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from test_bundle import tiny_vt
    from test_train_ar import toy_config, toy_dataset
    from simplear.train.ar import train_ar
    ds = toy_dataset()
    train_ar(toy_config(max_steps=4, checkpoint_every=100, eval=__import__("simplear.train.config",
             fromlist=["EvalConfig"]).EvalConfig(samples=False, val_batches=1)),
             sys.argv[1], dataset=ds, val_dataset=ds, visual_tokenizer=tiny_vt())
    """
)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = read_log(tmp_path / "one", "train"), read_log(tmp_path / "two", "train")
    assert read_log(tmp_path / "two", "start")[0]["world_size"] == 2
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    # Both wrote the same final weights' bundle (rank 0 only).
    cfg = json.loads((tmp_path / "two" / "bundle" / "simplear.json").read_text())
    assert cfg["grid"] == [4, 4]
