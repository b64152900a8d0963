"""A stage that owns trainable parameters and an optimizer of its own (as the debiasing adversary
will): it learns inside the jitted step, its state is sharded and checkpointed, and a resumed
run is identical to an uninterrupted one."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.configs.pretrain import tiny
from holo_jax.config import CheckpointConfig
from holo_jax.train.loop import train
from holo_jax.train.jsonl import read_jsonl, read_metrics
from holo_jax.train.stages import Stage

from tests.train.helpers import random_batch, run_steps


class ProbeStage(Stage):
    """A linear probe predicting a synthetic attribute (is the first token even?) from the mean
    hidden state, trained by its own Adam; the model gets `-weight * probe_loss` (adversarial)."""

    name = "probe"

    def __init__(self, weight: float = 0.1, lr: float = 1e-2):
        self.weight, self.opt = weight, optax.adam(lr)

    def init(self, key, params):
        d = params["decoder"]["embedding"].shape[1]
        probe = {"w": jax.random.normal(key, (d,)) * 0.01, "b": jnp.zeros(())}
        return {"probe": probe, "opt": self.opt.init(probe)}

    @staticmethod
    def _probe_loss(probe, pooled_bd, label_b):
        return optax.sigmoid_binary_cross_entropy(pooled_bd @ probe["w"] + probe["b"], label_b).mean()

    def loss(self, params, stage_state, batch, outputs, key):
        pooled_bd = outputs["hidden"].astype(jnp.float32).mean(axis=1)
        label_b = (batch["inputs"][:, 0] % 2).astype(jnp.float32)
        probe_loss, probe_grads = jax.value_and_grad(self._probe_loss)(
            stage_state["probe"], jax.lax.stop_gradient(pooled_bd), label_b)
        model_term = -self.weight * self._probe_loss(jax.lax.stop_gradient(stage_state["probe"]), pooled_bd, label_b)
        return model_term, {"probe_loss": probe_loss, "probe_grads": probe_grads}

    def update(self, stage_state, aux, key):
        updates, opt = self.opt.update(aux["probe_grads"], stage_state["opt"], stage_state["probe"])
        return {"probe": optax.apply_updates(stage_state["probe"], updates), "opt": opt}

    def metrics(self, stage_state, aux):
        return {"loss": aux["probe_loss"]}


def test_stage_parameters_learn_with_their_own_optimizer_on_a_sharded_mesh(require_devices):
    require_devices(8)
    batch = random_batch(rows=8, seed=3)
    stage = ProbeStage(weight=0.0, lr=3e-2)  # weight 0: the model is untouched, only the probe learns
    state, hist = run_steps((2, 2, 2), [batch] * 12, stages=(stage,))
    probe_losses = [float(m["probe/loss"]) for m, _ in hist]
    assert probe_losses[-1] < 0.8 * probe_losses[0], probe_losses
    assert int(state.stage_states[0]["opt"][0].count) == 12  # its own Adam took every step


def test_adversarial_term_reaches_model_gradients():
    batch = random_batch(rows=8, seed=4)
    plain, _ = run_steps((1, 1, 1), [batch] * 2, stages=(ProbeStage(weight=0.0),))
    adversarial, _ = run_steps((1, 1, 1), [batch] * 2, stages=(ProbeStage(weight=5.0),))
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), plain.params, adversarial.params)
    assert max(jax.tree.leaves(diff)) > 0


def test_stage_parameters_are_checkpointed_and_resume_is_exact(tmp_path):
    cfg = tiny()
    cfg = dataclasses.replace(cfg, steps=8, checkpoint=CheckpointConfig(every_steps=4, keep=2),
                              log=dataclasses.replace(cfg.log, eval_every_steps=0, progress_bar=False, plot=False,
                                                      tensorboard=False))
    train(cfg, tmp_path / "straight", stages=(ProbeStage(),))
    train(cfg, tmp_path / "resumed", stages=(ProbeStage(),), stop_after=4)
    train(cfg, tmp_path / "resumed", stages=(ProbeStage(),))
    rows = {name: read_metrics(tmp_path / name / "metrics.jsonl") for name in ("straight", "resumed")}
    for key in ("loss", "probe/loss"):
        a, b = ([r[key] for r in rows[n]] for n in ("straight", "resumed"))
        assert len(a) == 8 and a == b, key  # bit-identical, so the probe and its Adam state were restored
