"""2 processes x 4 devices train exactly like 1 process x 8 devices (same losses to round-off)."""
import dataclasses
import json

import numpy as np
import pytest

from experiments.launch_local import launch
from holo_jax.config import CheckpointConfig, MeshConfig, override
from holo_jax.train.loop import train
from holo_jax.train.jsonl import read_jsonl, read_metrics
from tests.train.test_loop import small
import tests.train.plugin_stages  # noqa: F401  (registers the probe stage)

STEPS = 6


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_two_processes_match_one(tmp_path, mesh, require_devices):
    require_devices(8)
    cfg = dataclasses.replace(override(small(STEPS), ["stages=probe"]), mesh=MeshConfig(*mesh),
                              checkpoint=CheckpointConfig(every_steps=3, keep=2))
    train(cfg, tmp_path / "one")
    args = ["--workdir", str(tmp_path / "two"), "--config", "tiny", "--steps", str(STEPS),
            "--set", f"mesh.data={mesh[0]}", "--set", f"mesh.fsdp={mesh[1]}", "--set", f"mesh.tensor={mesh[2]}",
            "--set", "checkpoint.every_steps=3", "--set", "checkpoint.keep=2", "--set", "log.eval_every_steps=0",
            "--set", "log.progress_bar=false", "--set", "log.plot=false", "--set", "log.tensorboard=false",
            "--plugin", "tests.train.plugin_stages", "--set", "stages=probe"]
    assert launch(2, 4, "experiments.pretrain", args, timeout=300) == 0
    one = read_metrics(tmp_path / "one" / "metrics.jsonl")
    two = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in two] == list(range(1, STEPS + 1))
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in two], [r["grad_norm"] for r in one], rtol=1e-4)
    np.testing.assert_allclose([r["probe/loss"] for r in two], [r["probe/loss"] for r in one], rtol=1e-5)
    assert read_jsonl(tmp_path / "two" / "emitted" / "probe.jsonl")  # process 0 wrote the windows
    start = [json.loads(l) for l in open(tmp_path / "two" / "events.jsonl")][0]
    assert start["processes"] == 2 and start["devices"] == 8


@pytest.mark.slow
def test_two_process_run_resumes_from_its_checkpoint(tmp_path):
    """Stop a 2-process run early, resume it with 2 processes: same losses as uninterrupted."""
    common = ["--config", "tiny", "--steps", "6", "--set", "checkpoint.every_steps=2", "--set", "log.eval_every_steps=0",
              "--set", "log.progress_bar=false", "--set", "log.plot=false", "--set", "log.tensorboard=false"]
    assert launch(2, 4, "experiments.pretrain", ["--workdir", str(tmp_path / "a"), *common], timeout=300) == 0
    assert launch(2, 4, "experiments.pretrain", ["--workdir", str(tmp_path / "b"), *common, "--stop-after", "3"],
                  timeout=300) == 0
    assert launch(2, 4, "experiments.pretrain", ["--workdir", str(tmp_path / "b"), *common], timeout=300) == 0
    a = [r["loss"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    b = [r["loss"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert len(a) == 6 and a == b
