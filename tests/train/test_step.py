"""The pure step: stage hooks, non-finite gradients skipped and counted, determinism."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from holo_jax.train.stages import Stage
from tests.train.helpers import random_batch, run_steps


class PoisonOnStep(Stage):
    """Makes the loss NaN on one chosen step, through a stage's extra loss term."""

    name = "poison"

    def __init__(self, bad_step: int):
        self.bad_step = bad_step

    def init(self, key, params):
        return {"calls": jnp.zeros((), jnp.int32)}

    def loss(self, params, stage_state, batch, outputs, key):
        bad = stage_state["calls"] == self.bad_step
        return jnp.where(bad, jnp.nan, 0.0) * outputs["logits"].mean(), {}

    def update(self, stage_state, aux, key):
        return {"calls": stage_state["calls"] + 1}


def test_nonfinite_gradients_skip_the_update_and_are_counted():
    batches = [random_batch(seed=s) for s in range(4)]
    clean, clean_hist = run_steps((1, 1, 1), batches[:2])
    state, hist = run_steps((1, 1, 1), batches[:2] + [batches[0]], stages=(PoisonOnStep(bad_step=2),))
    metrics = [m for m, _ in hist]
    assert [bool(m["finite"]) for m in metrics] == [True, True, False]
    assert int(state.skipped_steps) == 1 and int(state.step) == 3
    # Parameters and the optimizer are exactly as after the two good steps; the stage state too.
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(clean.params)):
        np.testing.assert_array_equal(a, b)
    assert int(state.stage_states[0]["calls"]) == 2
    assert int(state.opt_state[1][0].count) == int(clean.opt_state[1][0].count)


class CountingStage(Stage):
    """Exercises every hook: extra loss, gradient transform, own state update, metrics, emit."""

    name = "counter"

    def init(self, key, params):
        return {"seen": jnp.zeros((), jnp.int32), "residual": jax.tree.map(jnp.zeros_like, params)}

    def partition_specs(self, abstract_state, param_specs):
        return {"seen": P(), "residual": param_specs}

    def loss(self, params, stage_state, batch, outputs, key):
        return 0.0 * outputs["logits"].mean(), {"mean_logit": outputs["logits"].mean()}

    def grads(self, grads, stage_state, aux, key):
        # Halve gradients and remember what was dropped (an error-feedback shape of hook).
        half = jax.tree.map(lambda g: 0.5 * g, grads)
        return half, {**stage_state, "residual": jax.tree.map(jnp.add, stage_state["residual"], half)}

    def update(self, stage_state, aux, key):
        return {**stage_state, "seen": stage_state["seen"] + 1}

    def metrics(self, stage_state, aux):
        return {"seen": stage_state["seen"]}

    def emit(self, stage_state, aux):
        return {"mean_logit": aux["mean_logit"]}


def test_stage_hooks_run_in_order_and_state_is_sharded_like_params(require_devices):
    require_devices(8)
    batches = [random_batch(seed=s) for s in range(2)]
    state, hist = run_steps((2, 2, 2), batches, stages=(CountingStage(),))
    metrics, emitted = hist[-1]
    assert int(metrics["counter/seen"]) == 2
    assert np.isfinite(emitted[0]["mean_logit"])
    assert int(state.stage_states[0]["seen"]) == 2
    assert any(float(np.abs(x).max()) > 0 for x in jax.tree.leaves(state.stage_states[0]["residual"]))


def test_same_inputs_same_results():
    batches = [random_batch(seed=s) for s in range(2)]
    a, _ = run_steps((1, 1, 1), batches)
    b, _ = run_steps((1, 1, 1), batches)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
