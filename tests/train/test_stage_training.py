"""A stage that owns trainable parameters and an optimizer of its own (as the debiasing adversary
will): it learns inside the jitted step, its state is sharded and checkpointed, a resumed run is
identical to an uninterrupted one, and its emitted windows reach the sink exactly once."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from experiments.configs.pretrain import tiny
from holo_jax.config import CheckpointConfig, override
from holo_jax.train.jsonl import read_jsonl, read_metrics
from holo_jax.train.loop import train
from tests.train.helpers import random_batch, run_steps
from tests.train.plugin_stages import ProbeConfig, ProbeStage


def test_stage_parameters_learn_with_their_own_optimizer_on_a_sharded_mesh(require_devices):
    require_devices(8)
    batch = random_batch(rows=8, seed=3)
    # weight 0: the model is untouched, only the probe learns
    stage = ProbeStage(ProbeConfig(weight=0.0, learning_rate=3e-2))
    state, hist = run_steps((2, 2, 2), [batch] * 12, stages=(stage,))
    probe_losses = [float(m["probe/loss"]) for m, _ in hist]
    assert probe_losses[-1] < 0.8 * probe_losses[0], probe_losses
    assert int(state.stage_states["probe"]["opt"][0].count) == 12  # its own Adam took every step


@pytest.mark.slow
def test_the_adversarial_term_pushes_the_model_against_the_probe():
    """With the adversarial term the model's hidden states become worse for the probe than without:
    the sign of the term is right (a wrong sign would help the probe)."""
    batches = [random_batch(rows=8, seed=s % 2) for s in range(16)]
    plain, plain_hist = run_steps((1, 1, 1), batches, stages=(ProbeStage(ProbeConfig(weight=0.0, learning_rate=3e-2)),))
    adv, adv_hist = run_steps((1, 1, 1), batches, stages=(ProbeStage(ProbeConfig(weight=3.0, learning_rate=3e-2)),))
    plain_probe = np.mean([float(m["probe/loss"]) for m, _ in plain_hist[-4:]])
    adv_probe = np.mean([float(m["probe/loss"]) for m, _ in adv_hist[-4:]])
    assert adv_probe > plain_probe + 0.02, (plain_probe, adv_probe)
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), plain.params, adv.params)
    assert max(jax.tree.leaves(diff)) > 0


def _cfg(steps: int):
    cfg = override(tiny(), ["stages=probe"])
    return dataclasses.replace(cfg, steps=steps, checkpoint=CheckpointConfig(every_steps=4, keep=2),
                               log=dataclasses.replace(cfg.log, eval_every_steps=0, progress_bar=False, plot=False,
                                                       tensorboard=False))


@pytest.mark.slow
def test_stage_state_is_checkpointed_resume_is_exact_and_windows_arrive_once(tmp_path):
    cfg = _cfg(8)
    train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "resumed", stop_after=4)
    # A crash after the window of step 6 was written but before step 6 was saved:
    with open(tmp_path / "resumed" / "emitted" / "probe.jsonl", "a") as f:
        f.write(json.dumps({"step": 6, "value": {"probe_loss_sum": -1.0}}) + "\n")
    train(cfg, tmp_path / "resumed")
    rows = {name: read_metrics(tmp_path / name / "metrics.jsonl") for name in ("straight", "resumed")}
    for key in ("loss", "probe/loss"):
        a, b = ([r[key] for r in rows[n]] for n in ("straight", "resumed"))
        assert len(a) == 8 and a == b, key  # bit-identical, so the probe and its Adam state were restored
    windows = {n: read_jsonl(tmp_path / n / "emitted" / "probe.jsonl") for n in ("straight", "resumed")}
    assert [w["step"] for w in windows["resumed"]] == [2, 4, 6, 8]
    assert windows["resumed"] == windows["straight"]
    assert config_section(tmp_path / "resumed") == [{"kind": "probe", "name": "probe", "weight": 0.1,
                                                     "learning_rate": 0.01, "emit_every": 2}]


def config_section(workdir):
    return json.loads((workdir / "config.json").read_text())["config"]["stages"]


def test_changing_a_stage_setting_on_resume_is_refused(tmp_path):
    import pytest

    from holo_jax.errors import HoloError

    train(_cfg(4), tmp_path, stop_after=2)
    with pytest.raises(HoloError, match="stages"):
        train(override(_cfg(4), ["stages.probe.weight=0.5"]), tmp_path)
