"""The stage contract of the step: one reduction rule for every statistic, whatever the microbatch
count and gradient-communication scheme; stages compose with their own state, metrics and emits;
a requested term gradient is exactly `jax.grad` of that term; a stage that asks for nothing costs
nothing."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from holo_jax.config import GradCommConfig, MeshConfig, OptimConfig
from holo_jax.parallel.grad_comm_plan import make_grad_comm
from holo_jax.parallel.mesh import build_mesh
from holo_jax.train.optimizer import make_optimizer, learning_rate_schedule
from holo_jax.train.stages import Stage
from holo_jax.train.state import init_train_state
from holo_jax.train.stats import Stat
from holo_jax.train.step import jit_train_step, make_train_step
from holo_jax.train.tasks import NextTokenLM
from tests.train.helpers import TINY, random_batch, run_steps
from tests.train.test_step import HalvingStage


class Counter(Stage):
    """Integer counters and a (sum, count) statistic, accumulated in its own state and emitted."""

    emit_every = 1

    def __init__(self, name: str = "counter"):
        self.name = name

    def init(self, key, params):
        return {"rows": jnp.zeros((), jnp.int32), "even": jnp.zeros((), jnp.int32)}

    def loss(self, params, stage_state, batch, outputs, key):
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], batch["targets"])
        return {}, {"rows": jnp.int32(batch["inputs"].shape[0]),
                    "even": jnp.sum(batch["inputs"] % 2 == 0, dtype=jnp.int32),
                    "ce": Stat.of(ce)}

    def update(self, stage_state, stats, key):
        return {"rows": stage_state["rows"] + stats["rows"], "even": stage_state["even"] + stats["even"]}

    def metrics(self, stage_state, stats):
        return {"rows": stats["rows"], "even": stats["even"], "ce": stats["ce"].mean()}

    def emit(self, stage_state, stats):
        return {"rows_so_far": stage_state["rows"]}


BATCH = random_batch(rows=16, seed=11)
EVEN = int(np.sum(BATCH["inputs"] % 2 == 0))


@pytest.fixture(scope="module")
def reference_loss():
    (_, [(metrics, _)]) = run_steps((1, 1, 1), [BATCH])
    return float(metrics["loss"])


@pytest.mark.parametrize("microbatches", [1, 2, 4])
@pytest.mark.parametrize("scheme", ["fp32", "int8", "int4"])
def test_statistics_do_not_depend_on_microbatches_or_grad_comm(scheme, microbatches, reference_loss, require_devices):
    require_devices(4)
    grad_comm = lambda mesh: make_grad_comm(GradCommConfig(scheme=scheme), mesh)  # noqa: E731
    state, [(metrics, emitted)] = run_steps((4, 1, 1), [BATCH], stages=(Counter(),), microbatches=microbatches,
                                            grad_comm=grad_comm)
    assert int(metrics["counter/rows"]) == 16 and int(metrics["counter/even"]) == EVEN
    assert int(state.stage_states["counter"]["rows"]) == 16 and int(emitted["counter"]["rows_so_far"]) == 16
    # The stage's mean and the task's loss are the same (sum, count) ratio over the global batch.
    np.testing.assert_allclose(float(metrics["counter/ce"]), reference_loss, rtol=2e-6)
    np.testing.assert_allclose(float(metrics["loss"]), reference_loss, rtol=2e-6)


def test_two_stages_compose_each_with_its_own_state_metrics_and_emits():
    batches = [random_batch(seed=s) for s in range(2)]
    state, hist = run_steps((1, 1, 1), batches, stages=(Counter("first"), HalvingStage(), Counter("second")))
    metrics, emitted = hist[-1]
    assert set(state.stage_states) == {"first", "halver", "second"}
    assert int(state.stage_states["first"]["rows"]) == int(state.stage_states["second"]["rows"]) == 16
    assert int(metrics["first/rows"]) == int(metrics["second/rows"]) == 8 and int(metrics["halver/seen"]) == 2
    assert set(emitted) == {"first", "halver", "second"} and int(emitted["second"]["rows_so_far"]) == 16
    # The halving stage halves the gradient the optimizer gets: the step is not the same as without it.
    plain, _ = run_steps((1, 1, 1), batches, stages=(Counter("first"), Counter("second")))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(state.params)))


PUSH = 0.1


class TermGradients(Stage):
    """Adds a term of its own and asks for its gradient and the task's separately; keeps both."""

    name = "probe"
    grad_terms = ("task", "push")

    def init(self, key, params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return {"task": zeros, "push": zeros}

    def partition_specs(self, abstract_state, param_specs):
        return {"task": param_specs, "push": param_specs}

    def loss(self, params, stage_state, batch, outputs, key):
        per_row = PUSH * jnp.square(outputs["logits"]).mean(axis=(1, 2))
        return {"push": Stat.of(per_row)}, {}

    def grads(self, grads, term_grads, stage_state, stats, key):
        return grads, {"task": term_grads["task"], "push": term_grads["push"]}


def _reference_term_gradients(params, batch):
    model = NextTokenLM().build_model(TINY)

    def logits(p):
        return model.apply({"params": p}, batch["inputs"])[0]

    task = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(logits(p), batch["targets"]).mean())
    push = jax.grad(lambda p: PUSH * jnp.square(logits(p)).mean())
    return task(params), push(params)


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape, microbatches", [((1, 1, 1), 1), ((2, 1, 2), 2)])
def test_a_requested_term_gradient_is_exactly_the_gradient_of_that_term(mesh_shape, microbatches, require_devices):
    require_devices(int(np.prod(mesh_shape)))
    initial, _ = run_steps((1, 1, 1), [], stages=(TermGradients(),))
    state, [(metrics, _)] = run_steps(mesh_shape, [BATCH], stages=(TermGradients(),), microbatches=microbatches)
    want_task, want_push = _reference_term_gradients(initial.params, BATCH)
    for got, want in ((state.stage_states["probe"]["task"], want_task), (state.stage_states["probe"]["push"], want_push)):
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=2e-4, atol=1e-6 * float(np.abs(w).max()))
    # The optimizer got the total, task + push.
    total = optax.global_norm(jax.tree.map(jnp.add, want_task, want_push))
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(total), rtol=1e-4)


class DoesNothing(Stage):
    name = "idle"


def _flops(stages) -> float:
    mesh = build_mesh(MeshConfig(1, 1, 1), TINY, jax.devices()[:1])
    task, opt, schedule = NextTokenLM(), make_optimizer(OptimConfig(), 10), learning_rate_schedule(OptimConfig(), 10)
    model = task.build_model(TINY)
    state, shardings = init_train_state(model, task.init_inputs(TINY.max_len), opt, stages, mesh)
    step = jit_train_step(make_train_step(task, model, opt, schedule, stages, mesh), shardings, BATCH, mesh)
    with jax.set_mesh(mesh):
        return step.lower(state, BATCH).compile().cost_analysis()["flops"]


@pytest.mark.slow
def test_a_stage_that_asks_for_nothing_costs_nothing():
    base, idle = _flops(()), _flops((DoesNothing(),))
    assert idle == base
    # One asking for every term's gradient (task + its own) pays one pull-back per term, no second
    # forward pass: forward F + 2 backward passes (~2F each) against F + 2F, i.e. about 5/3 of the base.
    assert 1.4 * base < _flops((TermGradients(),)) < 1.8 * base
