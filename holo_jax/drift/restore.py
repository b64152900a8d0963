"""Any run's model (pretrain or classifier workdir) with its latest checkpoint's parameters: the
drift experiment scores texts through the model of `--checkpoint DIR`, whichever task it ran.
The restore itself is holo_jax.train.restore_run's, shared with fairness_eval and explain."""
from __future__ import annotations

from pathlib import Path

from holo_jax.train.restore_run import RestoredRun
from holo_jax.train.restore_run import load_run as _load_run


def load_run(workdir: str | Path) -> RestoredRun:
    """The run in `workdir` (its effective config.json) with the parameters of its latest checkpoint."""
    return _load_run(workdir, what="pretrain or classification run")


__all__ = ["RestoredRun", "load_run"]
