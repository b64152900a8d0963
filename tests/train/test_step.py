"""The pure step: stage hooks, non-finite steps skipped and counted, determinism."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from holo_jax.config import OptimConfig
from holo_jax.train.stages import Stage
from holo_jax.train.stats import Stat
from tests.train.helpers import random_batch, run_steps


class PoisonOnStep(Stage):
    """Makes the loss NaN on one chosen step, through a stage's extra loss term."""

    def __init__(self, bad_step: int, name: str = "poison"):
        self.bad_step, self.name = bad_step, name

    def init(self, key, params):
        return {"calls": jnp.zeros((), jnp.int32)}

    def loss(self, params, stage_state, batch, outputs, key):
        bad = stage_state["calls"] == self.bad_step
        return {"nan": Stat(jnp.where(bad, jnp.nan, 0.0) * outputs["logits"].sum(), jnp.float32(1.0))}, {}

    def update(self, stage_state, stats, key):
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
    assert int(state.stage_states["poison"]["calls"]) == 2
    assert int(state.opt_state[1][0].count) == int(clean.opt_state[1][0].count)
    # param_norm is the norm of the parameters each step leaves: the skipped step reports the kept ones.
    kept = float(np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in jax.tree.leaves(clean.params))))
    np.testing.assert_allclose([float(m["param_norm"]) for m in metrics[1:]], [kept, kept], rtol=1e-5)


def test_a_gradient_whose_squares_overflow_is_skipped_like_a_nonfinite_one():
    """The finiteness check reads the gradient norm: 1e30 is finite but its square is not, and a
    step that large is no step to take."""

    class Huge(PoisonOnStep):
        def loss(self, params, stage_state, batch, outputs, key):
            bad = stage_state["calls"] == self.bad_step
            return {"huge": Stat(jnp.where(bad, 1e30, 0.0) * outputs["logits"].sum(), jnp.float32(1.0))}, {}

    batches = [random_batch(seed=s) for s in range(2)]
    state, hist = run_steps((1, 1, 1), batches, stages=(Huge(bad_step=1, name="huge"),))
    assert [bool(m["finite"]) for m, _ in hist] == [True, False]
    assert int(state.skipped_steps) == 1


def test_a_nonfinite_update_is_skipped_even_when_the_gradients_are_finite():
    """A NaN learning rate gives finite gradients and NaN updates: nothing may be applied."""
    batches = [random_batch(seed=s) for s in range(2)]
    init, _ = run_steps((1, 1, 1), [])
    state, hist = run_steps((1, 1, 1), batches, optim=OptimConfig(learning_rate=float("nan"), warmup_steps=0))
    assert [bool(m["finite"]) for m, _ in hist] == [False, False]
    assert all(np.isfinite(float(m["grad_norm"])) for m, _ in hist)
    assert int(state.skipped_steps) == 2
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(init.params)):
        np.testing.assert_array_equal(a, b)


class HalvingStage(Stage):
    """Exercises every hook: a term, a gradient transform with a residual, its own state update,
    metrics and emit."""

    emit_every = 1

    def __init__(self, name: str = "halver"):
        self.name = name

    def init(self, key, params):
        return {"seen": jnp.zeros((), jnp.int32), "residual": jax.tree.map(jnp.zeros_like, params)}

    def partition_specs(self, abstract_state, param_specs):
        return {"seen": P(), "residual": param_specs}

    def loss(self, params, stage_state, batch, outputs, key):
        return {}, {"logit": Stat.of(outputs["logits"])}

    def grads(self, grads, term_grads, stage_state, stats, key):
        half = jax.tree.map(lambda g: 0.5 * g, grads)
        return half, {**stage_state, "residual": jax.tree.map(jnp.add, stage_state["residual"], half)}

    def update(self, stage_state, stats, key):
        return {**stage_state, "seen": stage_state["seen"] + 1}

    def metrics(self, stage_state, stats):
        return {"seen": stage_state["seen"], "mean_logit": stats["logit"].mean()}

    def emit(self, stage_state, stats):
        return {"logit_sum": stats["logit"].sum}


def test_stage_hooks_run_in_order_and_state_is_sharded_like_params(require_devices):
    require_devices(8)
    batches = [random_batch(seed=s) for s in range(2)]
    state, hist = run_steps((2, 2, 2), batches, stages=(HalvingStage(),))
    metrics, emitted = hist[-1]
    assert int(metrics["halver/seen"]) == 2
    assert np.isfinite(emitted["halver"]["logit_sum"])
    assert int(state.stage_states["halver"]["seen"]) == 2
    # The residual holds exactly the halved gradients the optimizer saw, summed over the two steps.
    plain, _ = run_steps((1, 1, 1), batches[:1], stages=(HalvingStage(),))
    assert any(float(np.abs(x).max()) > 0 for x in jax.tree.leaves(plain.stage_states["halver"]["residual"]))


def test_same_inputs_same_results():
    batches = [random_batch(seed=s) for s in range(2)]
    a, _ = run_steps((1, 1, 1), batches)
    b, _ = run_steps((1, 1, 1), batches)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
