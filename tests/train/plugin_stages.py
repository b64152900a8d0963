"""A registered stage for tests that go through `train()` or the CLI (`--plugin tests.train.plugin_stages
--set stages=probe`): a linear probe with trainables and an optimizer of its own, trained adversarially
(the shape of the debiasing adversary to come), which also emits a window every `emit_every` steps.

The probe predicts a binary attribute from the mean hidden state: the example's label when the
batch has one (classification), else the parity of the first token (language modelling). The model
gets `-weight x probe loss` as a named term, so the adversarial gradient reaches it."""
from __future__ import annotations

import dataclasses
from typing import Annotated

import jax
import jax.numpy as jnp
import optax

from holo_jax.config import AtLeast, StageConfig
from holo_jax.train.stages import Stage, register_stage
from holo_jax.train.stats import Stat


@dataclasses.dataclass(frozen=True)
class ProbeConfig(StageConfig):
    kind = "probe"
    weight: float = 0.1
    learning_rate: Annotated[float, AtLeast(0.0)] = 1e-2
    emit_every: Annotated[int, AtLeast(0)] = 2


def _attribute(batch) -> jax.Array:
    if "label" in batch:
        return (batch["label"] > 0).astype(jnp.float32)
    return (batch["inputs"][:, 0] % 2).astype(jnp.float32)


class ProbeStage(Stage):
    def __init__(self, cfg: ProbeConfig = ProbeConfig()):
        self.name = cfg.stage_name
        self.weight, self.opt, self.emit_every = cfg.weight, optax.adam(cfg.learning_rate), cfg.emit_every

    def init(self, key, params):
        d = params["decoder"]["embedding"].shape[1]
        probe = {"w": jax.random.normal(key, (d,)) * 0.01, "b": jnp.zeros(())}
        return {"probe": probe, "opt": self.opt.init(probe)}

    @staticmethod
    def _losses(probe, pooled_bd, label_b):
        return optax.sigmoid_binary_cross_entropy(pooled_bd @ probe["w"] + probe["b"], label_b)

    def loss(self, params, stage_state, batch, outputs, key):
        pooled_bd = outputs["hidden"].astype(jnp.float32).mean(axis=1)
        label_b = _attribute(batch)
        # The probe's own gradient, as a sum over rows (it adds up over microbatches and replicas).
        probe_sum, probe_grads = jax.value_and_grad(lambda p: self._losses(p, jax.lax.stop_gradient(pooled_bd),
                                                                              label_b).sum())(stage_state["probe"])
        rows = jnp.float32(label_b.shape[0])
        model_term = -self.weight * self._losses(jax.lax.stop_gradient(stage_state["probe"]), pooled_bd, label_b).sum()
        return ({"adversary": Stat(model_term, rows)},
                {"probe_loss": Stat(probe_sum, rows), "probe_grads": Stat(probe_grads, rows)})

    def update(self, stage_state, stats, key):
        updates, opt = self.opt.update(stats["probe_grads"].mean(), stage_state["opt"], stage_state["probe"])
        return {"probe": optax.apply_updates(stage_state["probe"], updates), "opt": opt}

    def metrics(self, stage_state, stats):
        return {"loss": stats["probe_loss"].mean()}

    def emit(self, stage_state, stats):
        return {"probe_loss_sum": stats["probe_loss"].sum, "rows": stats["probe_loss"].count, "w": stage_state["probe"]["w"][:4]}


@register_stage(ProbeConfig)
def _build(cfg: ProbeConfig) -> ProbeStage:
    return ProbeStage(cfg)


@dataclasses.dataclass(frozen=True)
class NanFromConfig(StageConfig):
    """A stage that makes every step from `from_step` on non-finite (a diverging run)."""

    kind = "nan_from"
    from_step: Annotated[int, AtLeast(0)] = 3


class NanFrom(Stage):
    def __init__(self, cfg: NanFromConfig):
        self.name, self.from_step = cfg.stage_name, cfg.from_step

    def init(self, key, params):
        return {"calls": jnp.zeros((), jnp.int32)}

    def loss(self, params, stage_state, batch, outputs, key):
        bad = stage_state["calls"] >= self.from_step
        return {"nan": Stat(jnp.where(bad, jnp.nan, 0.0) * outputs["logits"].sum(), jnp.float32(1.0))}, {}

    def update(self, stage_state, stats, key):
        return {"calls": stage_state["calls"] + 1}


@register_stage(NanFromConfig)
def _build_nan_from(cfg: NanFromConfig) -> NanFrom:
    return NanFrom(cfg)
