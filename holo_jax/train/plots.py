"""The loss curve of a run as a PNG, drawn from its metrics.jsonl."""
from __future__ import annotations

from pathlib import Path

from holo_jax.train.jsonl import read_metrics


def plot_loss_curve(workdir: str | Path, out_name: str = "loss.png") -> Path | None:
    """Train loss (and eval loss where logged) against step, from metrics.jsonl."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    train = [(r["step"], r["loss"]) for r in rows if isinstance(r.get("loss"), (int, float))]
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    evals = [(r["step"], r["eval_loss"]) for r in rows if isinstance(r.get("eval_loss"), (int, float))]
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    out = Path(workdir) / out_name
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
