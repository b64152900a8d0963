"""The pure train step `(state, batch) -> (state, metrics, emitted)` and the eval step.

Built once from the model, the optimizer and an ordered tuple of stages, then jitted with
explicit in/out shardings and the state donated. Inside:
  randomness   fold_in(state.rng, state.step): a resumed run draws the same numbers;
  accumulation the global batch is split into `microbatches` (microbatch i = rows i, i+M, ...,
               so every device keeps working on its own rows) and gradients are summed in float32
               under `lax.scan`;
  aggregation  `grad_comm` averages the gradients over data-parallel replicas: by default the
               compiler's exact float32 reduction, or a quantized all-reduce over the slow axes
               with error-feedback state in `state.grad_comm` (holo_jax.parallel.data_parallel);
  stages       add loss terms, transform gradients, update their own state, emit to the host;
  skipping     if any gradient is NaN/Inf the step keeps the old parameters, optimizer and stage
               states and only counts the skip — it is never applied.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from holo_jax.parallel.data_parallel import ExactMean, GradComm
from holo_jax.parallel.rules import BATCH_AXES, LOGICAL_AXIS_RULES, replicated, tree_batch_sharding
from holo_jax.train.stages import Stage
from holo_jax.train.state import TrainState

PyTree = Any
Batch = dict[str, jax.Array]


def next_token_loss(logits_btv: jax.Array, targets_bt: jax.Array) -> jax.Array:
    """Mean cross-entropy over all target tokens (float32)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_btv, targets_bt).mean()


def _tree_all_finite(tree: PyTree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _split_microbatches(batch: Batch, m: int, mesh: Mesh, batch_axes: tuple[str, ...] = BATCH_AXES) -> Batch:
    """[B, ...] -> [m, B/m, ...] with microbatch i = rows i, i+m, i+2m ... (strided, so that each
    device's rows are spread over all microbatches and no device idles)."""

    def split(x):
        x = x.reshape(x.shape[0] // m, m, *x.shape[1:]).swapaxes(0, 1)
        spec = P(None, batch_axes or None, *([None] * (x.ndim - 2)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return jax.tree.map(split, batch)


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, stages: Sequence[Stage], mesh: Mesh,
                    microbatches: int = 1, *, grad_comm: GradComm | None = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict, tuple]]:
    """The un-jitted pure step; see `jit_train_step`. `grad_comm` must be the one the state was
    initialised with (`init_train_state(..., grad_comm=)`)."""
    stages = tuple(stages)
    grad_comm = grad_comm or ExactMean()
    deterministic = getattr(model, "cfg", None) is None or model.cfg.dropout == 0.0

    def microbatch_loss(params, stage_states, batch, key):
        logits, outputs = model.apply({"params": params}, batch["inputs"], deterministic=deterministic,
                                      rngs={"dropout": key})
        ce = next_token_loss(logits, batch["targets"])
        outputs = {**outputs, "logits": logits}
        total, auxes = ce, []
        for i, stage in enumerate(stages):
            extra, aux = stage.loss(params, stage_states[i], batch, outputs, jax.random.fold_in(key, i + 1))
            total, auxes = total + extra, auxes + [aux]
        return total, (ce, tuple(auxes))

    grad_fn = jax.value_and_grad(microbatch_loss, has_aux=True)

    def gradients(params, stage_states, batch, key, batch_axes):
        """Float32 gradients and (total, ce, auxes) averaged over `batch`, whose rows are sharded
        over the mesh axes `batch_axes`; microbatches are accumulated under `lax.scan`."""
        if microbatches == 1:
            (total, (ce, auxes)), grads = grad_fn(params, stage_states, batch, key)
            return grads, (total, ce, auxes)
        micro = _split_microbatches(batch, microbatches, mesh, batch_axes)

        def body(acc, xs):
            i, mb = xs
            (t, (c, a)), g = grad_fn(params, stage_states, mb, jax.random.fold_in(key, i))
            return jax.tree.map(jnp.add, acc, (g, t, c, a)), None

        (_, (ce0, aux0)), g0 = jax.eval_shape(grad_fn, params, stage_states,
                                              jax.tree.map(lambda x: x[0], micro), key)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32 if jnp.issubdtype(s.dtype, jnp.floating) else s.dtype),
                             (g0, ce0, ce0, aux0))
        acc, _ = jax.lax.scan(body, zeros, (jnp.arange(microbatches), micro))
        # Floating leaves are means over microbatches; integer ones (counters) are totals, so a
        # stage sees the same dtypes whatever the microbatch count.
        grads, total, ce, auxes = jax.tree.map(
            lambda x: x / microbatches if jnp.issubdtype(x.dtype, jnp.floating) else x, acc)
        return grads, (total, ce, auxes)

    def train_step(state: TrainState, batch: Batch):
        with nn.logical_axis_rules(LOGICAL_AXIS_RULES):
            key = jax.random.fold_in(state.rng, state.step)
            (grads, (total, ce, auxes)), grad_comm_state = grad_comm.aggregate(
                functools.partial(gradients, state.params, state.stage_states), batch, key, state.grad_comm)

            finite = _tree_all_finite(grads)
            grad_norm = optax.global_norm(grads)
            stage_states = list(state.stage_states)
            for i, stage in enumerate(stages):
                grads, stage_states[i] = stage.grads(grads, stage_states[i], auxes[i],
                                                     jax.random.fold_in(key, 1000 + i))
            finite &= _tree_all_finite(grads)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            for i, stage in enumerate(stages):
                stage_states[i] = stage.update(stage_states[i], auxes[i], jax.random.fold_in(key, 2000 + i))

            stepped = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                    stage_states=tuple(stage_states), grad_comm=grad_comm_state)
            skipped = state.replace(step=state.step + 1, skipped_steps=state.skipped_steps + 1)
            new_state = jax.tree.map(lambda a, b: jnp.where(finite, a, b), stepped, skipped)

            metrics = {
                "loss": ce,
                "total_loss": total,
                "grad_norm": grad_norm,
                # optax counts applied updates only, so after a skipped step its schedule runs
                # behind the step counter by the number of skips: log the rate it used.
                "learning_rate": schedule(state.step - state.skipped_steps),
                "param_norm": optax.global_norm(state.params),
                "finite": finite,
                "skipped_steps": new_state.skipped_steps,
            }
            emitted = []
            for i, stage in enumerate(stages):
                metrics.update({f"{stage.name}/{k}": v for k, v in stage.metrics(new_state.stage_states[i], auxes[i]).items()})
                emitted.append(stage.emit(new_state.stage_states[i], auxes[i]))
            return new_state, metrics, tuple(emitted)

    return train_step


def jit_train_step(step_fn: Callable, state_shardings: TrainState, example_batch: Batch, mesh: Mesh):
    """Jit once with explicit shardings; the input state's buffers are donated to the output."""
    return jax.jit(
        step_fn,
        in_shardings=(state_shardings, tree_batch_sharding(mesh, example_batch)),
        out_shardings=(state_shardings, replicated(mesh), replicated(mesh)),
        donate_argnums=(0,),
    )


def make_eval_step(model: nn.Module, mesh: Mesh, example_batch: Batch, param_shardings: PyTree):
    """Jitted `(params, batch) -> summed loss and token count` (summed so batches can be pooled)."""

    def eval_step(params, batch):
        with nn.logical_axis_rules(LOGICAL_AXIS_RULES):
            logits, _ = model.apply({"params": params}, batch["inputs"], deterministic=True)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
            return {"loss_sum": losses.sum(), "tokens": jnp.asarray(losses.size, jnp.float32)}

    return jax.jit(eval_step, in_shardings=(param_shardings, tree_batch_sharding(mesh, example_batch)),
                   out_shardings=replicated(mesh))
