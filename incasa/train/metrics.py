"""Metrics as JSON lines (one object per logged step), and the training curve drawn from them as a PNG."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per call. On resume, lines past the resumed step are dropped (they were redone)."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            keep = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in keep))
            tmp.replace(self.path)
        elif resume_step is None:
            self.path.write_text("")

    def log(self, **values) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(values) + "\n")


def plot_curve(jsonl: str | Path, png: str | Path, key: str = "loss", title: str = "training loss") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows if key in r]
    values = [r[key] for r in rows if key in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, values, lw=0.6, alpha=0.4, label=key)
    if len(values) > 20:  # a running mean makes the trend readable through the flow-matching noise
        w = max(5, len(values) // 50)
        smooth = [sum(values[max(0, i - w + 1): i + 1]) / len(values[max(0, i - w + 1): i + 1]) for i in range(len(values))]
        ax.plot(steps, smooth, lw=1.5, label=f"running mean ({w})")
    ax.set_yscale("log")  # the early drop would otherwise flatten the part that matters
    ax.set_xlabel("step"), ax.set_ylabel(key), ax.set_title(title), ax.grid(alpha=0.3), ax.legend()
    fig.tight_layout()
    tmp = Path(png).with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png)
