"""2 processes, stopped and resumed, hand the drift sink every window exactly once, with the same
statistics as one uninterrupted process."""
from __future__ import annotations

import numpy as np
import pytest

from experiments.configs import pretrain as configs
from experiments.launch_local import launch
from holo_jax.config import override
from holo_jax.drift import drift_sinks
from holo_jax.train.jsonl import read_jsonl
from holo_jax.train.loop import train

DRIFT = ["stages=drift", "stages.drift.reference_windows=9", "stages.drift.calibration_windows=10",
         "stages.drift.warmup_windows=2", "stages.drift.false_alarm_rate=0.1"]
LOG = ["log.eval_every_steps=0", "log.progress_bar=false", "log.plot=false", "log.tensorboard=false",
       "checkpoint.every_steps=5"]


@pytest.mark.slow
def test_two_processes_stopped_and_resumed_test_every_window_once_like_one(tmp_path, require_devices):
    require_devices(8)
    cfg = override(configs.tiny(), [*DRIFT, *LOG, "steps=30"])
    train(cfg, tmp_path / "one", sinks=drift_sinks(cfg, tmp_path / "one"))
    args = ["--workdir", str(tmp_path / "two"), "--config", "tiny", "--steps", "30"]
    for s in [*DRIFT, *LOG]:
        args += ["--set", s]
    assert launch(2, 4, "experiments.pretrain", [*args, "--stop-after", "17"], timeout=300) == 0
    assert launch(2, 4, "experiments.pretrain", args, timeout=300) == 0
    one = read_jsonl(tmp_path / "one" / "drift" / "drift.jsonl")
    two = read_jsonl(tmp_path / "two" / "drift" / "drift.jsonl")
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(22, 31))
    np.testing.assert_allclose([r["statistic"] for r in two], [r["statistic"] for r in one], rtol=1e-4)
    assert [r["step"] for r in read_jsonl(tmp_path / "two" / "emitted" / "drift.jsonl")] == list(range(1, 31))
