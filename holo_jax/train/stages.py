"""Stages: pure functions wrapped around the train step (DESIGN.md section 3).

A stage adds one concern to the step without the step knowing it by name — an adversary's
loss term and its own optimizer, a gradient transformation with a residual, statistics handed to
the host. Every hook has a do-nothing default, so a stage implements only what it needs, and
stages compose in order like `optax.chain`. All hooks run inside `jit`: no I/O, no Python
side effects; anything for the host goes out through `emit`.

Hook order inside one step:
  for each microbatch:  loss(params, stage_state, batch, outputs, key) -> (extra_loss, aux)
  after accumulation:   grads(grads, stage_state, aux, key) -> (grads, stage_state)
                        update(stage_state, aux, key) -> stage_state   (the stage's own learning)
                        metrics(stage_state, aux) -> {name: scalar}    (into metrics.jsonl)
                        emit(stage_state, aux) -> pytree               (small arrays for host sinks)
`aux` from several microbatches is averaged (floating leaves) or summed (integer leaves). If
the step's gradients are not finite, the whole new state — stage states included — is
discarded, so a stage never learns from a skipped step.

A stage with trainable parameters of its own (an adversary) keeps them and their optax state in
its stage state. Its `loss` differentiates its own objective with respect to them (on
`stop_gradient` of the model's outputs) and returns those gradients in `aux` — so they are
accumulated over microbatches like the model's — and `update` applies its optimizer. Its
`extra_loss` (e.g. the negated adversary loss) is what reaches the model's gradients. The base
step thereby needs no second `value_and_grad` and knows nothing about adversaries.
"""
from __future__ import annotations

from typing import Any

import jax
from jax.sharding import PartitionSpec as P

PyTree = Any


class Stage:
    """Base class with pass-through hooks. Subclasses override what they need."""

    name: str = "stage"

    def init(self, key: jax.Array, params: PyTree) -> PyTree:
        """This stage's own state (its trainable parameters, optimizer state, residuals ...)."""
        return ()

    def partition_specs(self, abstract_state: PyTree, param_specs: PyTree) -> PyTree:
        """Logical PartitionSpecs for `init`'s output; replicated unless overridden. A stage whose
        state mirrors the parameters (e.g. an error-feedback residual) returns `param_specs`."""
        return jax.tree.map(lambda _: P(), abstract_state)

    def loss(self, params: PyTree, stage_state: PyTree, batch: dict, outputs: dict, key: jax.Array
             ) -> tuple[jax.Array | float, dict]:
        return 0.0, {}

    def grads(self, grads: PyTree, stage_state: PyTree, aux: dict, key: jax.Array) -> tuple[PyTree, PyTree]:
        return grads, stage_state

    def update(self, stage_state: PyTree, aux: dict, key: jax.Array) -> PyTree:
        return stage_state

    def metrics(self, stage_state: PyTree, aux: dict) -> dict[str, jax.Array]:
        return {}

    def emit(self, stage_state: PyTree, aux: dict) -> PyTree:
        return {}
