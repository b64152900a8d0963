"""A tiny language model's real train step on a 2-device data-parallel mesh, compiled per candidate.

One `StepCompiler` is shared by the module's tests: it compiles each candidate at most once, so
the planner can be asked about many budgets for the price of a handful of compiles. Plain SGD
keeps each compile short; the optimizer does not change what remat does to activations.
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax
import pytest

from holo_jax.config import MeshConfig, ModelConfig
from holo_jax.memory import StepCompiler
from holo_jax.model import CausalLM
from holo_jax.parallel.mesh import build_mesh
from holo_jax.train.state import abstract_train_state
from holo_jax.train.step import jit_train_step, make_train_step
from holo_jax.train.tasks import NextTokenLM

TINY = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=64, vocab_multiple=64)
BATCH = 8
LEARNING_RATE = 0.1


@pytest.fixture(scope="session")
def tiny_setup(require_devices_session):
    mesh = build_mesh(MeshConfig(data=2, fsdp=1, tensor=1), TINY, jax.devices()[:2])
    optimizer = optax.sgd(LEARNING_RATE)
    inputs = (jnp.zeros((1, TINY.max_len), jnp.int32),)
    state, shardings = abstract_train_state(CausalLM(TINY), inputs, optimizer, (), mesh)
    batch = {k: jax.ShapeDtypeStruct((BATCH, TINY.max_len), jnp.int32) for k in ("inputs", "targets")}

    def jitted_step_for(c):
        model = CausalLM(dataclasses.replace(TINY, remat=c.policy))
        step = make_train_step(NextTokenLM(), model, optimizer, lambda _: LEARNING_RATE, (), mesh, c.microbatches)
        return jit_train_step(step, shardings, batch, mesh)

    compiler = StepCompiler(jitted_step_for, mesh=mesh, state=state, example_batch=batch)
    return compiler, optimizer, inputs


@pytest.fixture(scope="session")
def require_devices_session():
    if jax.device_count() < 2:
        pytest.skip(f"needs 2 devices, have {jax.device_count()}")
