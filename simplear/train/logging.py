"""Run logging: one JSON line per record in `RUN/log.jsonl`, a console line, a progress bar.

Records are dicts with `kind` ("train" | "eval"), `step` and figures (loss, lr, tokens/s, ...).
On `--resume` the log is cut back to the checkpoint's step, so the file always describes one
uninterrupted run, which `simplear plot RUN` and the resume test read. Only rank 0 logs.
TensorBoard is optional: records go there too when `tensorboard` is installed and asked for.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

LOG_NAME = "log.jsonl"


def read_log(run_dir: str | Path, kind: str | None = None) -> list[dict]:
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a training run folder?")
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if kind is None or record.get("kind") == kind:
                records.append(record)
    return records


class RunLogger:
    def __init__(self, run_dir: str | Path, total_steps: int, start_step: int = 0, enabled: bool = True,
                 progress: bool = True, tensorboard: bool = False):
        self.enabled = enabled
        self.path = Path(run_dir) / LOG_NAME
        self._bar = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                             dynamic_ncols=True, file=sys.stderr)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:  # optional extra: the JSONL log is the record of the run
                self._tb = None
        self._t0 = time.time()

    def _truncate_after(self, step: int) -> None:
        """Drop records past `step` (left by a run killed after its last checkpoint)."""
        if not self.path.is_file():
            return
        if step == 0:  # restarted before the first checkpoint: nothing of the old log stands
            self.path.unlink()
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def log(self, record: dict, console: bool = True) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time() - self._t0, 3), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "time"):
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, record.get("step", 0))
        if console:
            figures = " ".join(f"{k}={_fmt(v)}" for k, v in record.items() if k not in ("kind", "time"))
            message = f"[{record.get('kind', 'train')}] {figures}"
            if self._bar is not None:
                self._bar.write(message, file=sys.stderr)
            else:
                print(message, file=sys.stderr)

    def step(self, loss: float | None = None) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.4f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
