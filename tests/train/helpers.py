"""Small builders shared by the train tests: a tiny model, a step on a given mesh, random batches."""
from __future__ import annotations

import jax
import numpy as np

from holo_jax.config import MeshConfig, ModelConfig, OptimConfig
from holo_jax.parallel.mesh import build_mesh
from holo_jax.train.optimizer import learning_rate_schedule, make_optimizer
from holo_jax.train.state import init_train_state
from holo_jax.train.step import jit_train_step, make_train_step
from holo_jax.train.tasks import NextTokenLM

TINY = ModelConfig(d_model=64, n_heads=4, d_ff=128, n_layers=2, max_len=32)


def random_batch(rows: int = 8, seq: int = 32, seed: int = 0, vocab: int = 258) -> dict[str, np.ndarray]:
    tokens = np.random.default_rng(seed).integers(0, vocab, (rows, seq + 1)).astype(np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


def run_steps(mesh_shape, batches, *, model_cfg=TINY, microbatches=1, stages=(), optim=OptimConfig(), total_steps=10,
              task=None, grad_comm=None):
    """Train on `batches` with a mesh of the first prod(mesh_shape) devices; returns (state, [(metrics, emitted)])."""
    task = task or NextTokenLM()
    devices = jax.devices()[: int(np.prod(mesh_shape))]
    mesh = build_mesh(MeshConfig(*mesh_shape), model_cfg, devices)
    model = task.build_model(model_cfg)
    opt = make_optimizer(optim, total_steps)
    if callable(grad_comm):  # a factory of the mesh
        grad_comm = grad_comm(mesh)
    state, shardings = init_train_state(model, task.init_inputs(model_cfg.max_len), opt, stages, mesh,
                                        grad_comm=grad_comm)
    if not batches:  # just the initial state
        return jax.device_get(state), []
    step = jit_train_step(make_train_step(task, model, opt, learning_rate_schedule(optim, total_steps), stages, mesh,
                                          microbatches, grad_comm=grad_comm), shardings, batches[0], mesh)
    history = []
    with jax.set_mesh(mesh):
        for batch in batches:
            state, metrics, emitted = step(state, batch)
            history.append(jax.device_get((metrics, emitted)))
    return jax.device_get(state), history
