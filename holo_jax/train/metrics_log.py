"""Where metrics go: `WORKDIR/metrics.jsonl`, TensorBoard event files, and a loss-curve PNG.

metrics.jsonl holds one JSON object per logged step (`step`, `loss`, ...). It is append-only and
flushed per line. When a run resumes from a checkpoint at step k, rows for steps after k (logged
before a crash, but whose state was never saved) are superseded by the steps the resumed run
recomputes; `truncate_after` drops them atomically so the file stays one row per step. A last
line torn by a crash mid-write is dropped the same way, never appended to.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping


class MetricsLog:
    def __init__(self, workdir: str | Path, *, enabled: bool = True, tensorboard: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        # Start-up decisions (e.g. the remat plan) carried by the next row written; see add_to_next_row.
        self._next_fields: dict[str, Any] = {}
        self._next_text: dict[str, str] = {}
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter  # lazy: only the primary process needs it

            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def add_to_next_row(self, fields: Mapping[str, Any], text: Mapping[str, str] | None = None) -> None:
        """Add `fields` to the next row written, once: a decision made at start-up (such as the
        remat plan) then sits in metrics.jsonl next to the first step it governs. Numeric fields
        reach TensorBoard as scalars like any metric; `text` (tag -> preformatted text) goes to
        its text tab at that step. A step's own metrics win over a field of the same name."""
        self._next_fields.update(fields)
        self._next_text.update(text or {})

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        extra, text = self._next_fields, self._next_text
        self._next_fields, self._next_text = {}, {}
        if not self.enabled:
            return
        merged = {**metrics, **{k: v for k, v in extra.items() if k not in metrics}}
        row = {"step": int(step), **{k: _scalar(v) for k, v in merged.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)
            for tag, body in text.items():
                # TensorBoard renders text as markdown; indenting makes it a code block, so tables stay aligned.
                self._tb.add_text(tag, "    " + body.replace("\n", "\n    "), step)

    def truncate_after(self, step: int) -> int:
        """Drop rows with `step > step`; returns how many were dropped."""
        if not self.enabled or not self.path.exists():
            return 0
        rows, torn = _read_rows(self.path)
        kept = [r for r in rows if r.get("step", 0) <= step]
        if len(kept) == len(rows) and not torn:
            return 0
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return len(rows) - len(kept)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines file; a line torn by a crash mid-write is skipped."""
    return _read_rows(path)[0]


def _read_rows(path: str | Path) -> tuple[list[dict], int]:
    rows, torn = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                torn += 1
    return rows, torn


def _scalar(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/Inf; keep it readable rather than invalid
    return v


def plot_loss_curve(workdir: str | Path, out_name: str = "loss.png") -> Path | None:
    """Train loss (and eval loss where logged) against step, from metrics.jsonl."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(path)
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
