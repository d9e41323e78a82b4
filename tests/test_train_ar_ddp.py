"""torchrun with 2 CPU processes (gloo) matches 1 process at the same global batch: DDP and FSDP2."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from simplear.train.logging import read_log

SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # ours, so both runs below share it (train_ar leaves it alone)
    from test_bundle import tiny_vt
    from test_train_ar import toy_config, toy_dataset
    from simplear.train.ar import train_ar
    from simplear.train.config import EvalConfig
    ds = toy_dataset()
    for parallel in ("ddp", "fsdp"):  # one launch for both: the imports are most of the cost
        train_ar(toy_config(parallel=parallel, max_steps=3, checkpoint_every=100,
                            eval=EvalConfig(samples=False, val_batches=1)),
                 sys.argv[1] + "/" + parallel, dataset=ds, val_dataset=ds, visual_tokenizer=tiny_vt())
    dist.destroy_process_group()
    """
)


def launch(script, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    # The 1-process reference runs in this process (a third launch would only repeat imports).
    from test_bundle import tiny_vt
    from test_train_ar import toy_config, toy_dataset

    from simplear.train.ar import train_ar
    from simplear.train.config import EvalConfig

    ds = toy_dataset()
    train_ar(toy_config(max_steps=3, checkpoint_every=100, eval=EvalConfig(samples=False, val_batches=1)),
             tmp_path / "one", dataset=ds, val_dataset=ds, visual_tokenizer=tiny_vt())
    one = read_log(tmp_path / "one", "train")
    assert [r["step"] for r in one] == [1, 2, 3]
    launch(script, tmp_path)
    for parallel in ("ddp", "fsdp"):
        two = read_log(tmp_path / parallel, "train")
        assert read_log(tmp_path / parallel, "start")[0]["world_size"] == 2
        assert [r["step"] for r in two] == [1, 2, 3]
        for ra, rb in zip(one, two):
            assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5), parallel
        # Rank 0 wrote the bundle (under FSDP from the gathered, unsharded weights).
        cfg = json.loads((tmp_path / parallel / "bundle" / "simplear.json").read_text())
        assert cfg["grid"] == [4, 4]
