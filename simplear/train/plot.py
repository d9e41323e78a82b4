"""`simplear plot RUN`: the loss and score curves of a training run as one PNG.

Reads `RUN/log.jsonl` (train loss, validation loss, judge score, and for GRPO runs any `reward`
figure) and draws one panel per kind of figure. matplotlib is an optional extra
(`pip install simplear[plot]`); without it the error says so.
"""

from __future__ import annotations

from pathlib import Path

from simplear.train.logging import read_log
from simplear.utils import atomic_path

# (panel title, record kind, keys) in drawing order; panels without data are left out.
PANELS = (
    ("loss", None, ("loss", "val_loss")),
    ("judge score", "eval", ("judge_score", "judge_correct")),
    ("reward", None, ("reward", "reward_mean")),
    ("learning rate", "train", ("lr",)),
)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the curves of `run_dir` to `out` (default `RUN/curves.png`); returns the PNG path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ValueError("simplear plot needs matplotlib: pip install 'simplear[plot]'") from err
    run_dir = Path(run_dir)
    records = read_log(run_dir)
    panels = []
    for title, kind, keys in PANELS:
        series = {}
        for key in keys:
            points = [(r["step"], r[key]) for r in records
                      if key in r and (kind is None or r.get("kind") == kind) and isinstance(r[key], (int, float))]
            if points:
                series[key] = points
        if series:
            panels.append((title, series))
    if not panels:
        raise ValueError(f"{run_dir / 'log.jsonl'} has no loss, score or reward records to plot yet")
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), squeeze=False)
    for ax, (title, series) in zip(axes[:, 0], panels):
        for key, points in series.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "curves.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out
