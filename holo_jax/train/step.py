"""The pure train step `(state, batch) -> (state, metrics, emitted)` and the eval step.

Built once from a task, the model, the optimizer and a tuple of stages, then jitted with explicit
in/out shardings and the state donated. Inside:
  objective     the task's term plus every stage term, each `sum / count` with the count over the
                whole global batch (taken first from a trace of the loss functions whose model
                part JAX prunes: counts depend on the batch only), so microbatches and replicas
                contribute parts that simply add up;
  randomness    fold_in(state.rng, state.step), then per microbatch and per stage by name: a
                resumed run draws the same numbers;
  accumulation  the global batch is split into `microbatches` (microbatch i = rows i, i+M, ...,
                so every device keeps working on its own rows); gradients and statistics are
                summed under `lax.scan`;
  aggregation   `grad_comm` reduces over data-parallel replicas: the compiler's exact float32
                reduction, or a quantized all-reduce over the slow axes with error-feedback state
                in `state.grad_comm` (holo_jax.parallel.grad_comm); statistics are summed exactly;
  term grads    a stage may ask for the gradient of a named term apart from the total: one extra
                pull-back of the same forward pass per name (exact float32 reduction);
  stages        add terms, transform gradients, update their own state, report metrics, emit;
  skipping      if the gradients, the update or the new parameters or stage states are not
                finite, the step keeps the old parameters, optimizer and stage states and only
                counts the skip.
"""
from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from holo_jax.errors import HoloError
from holo_jax.parallel.grad_comm import ExactMean, GradComm
from holo_jax.parallel.rules import BATCH_AXES, LOGICAL_AXIS_RULES, replicated, tree_batch_sharding
from holo_jax.train.stages import RESERVED_NAMES, Stage, check_stages, stage_key
from holo_jax.train.state import TrainState
from holo_jax.train.stats import Stat, as_float32, is_stat, means, safe_divide
from holo_jax.train.tasks import Task

PyTree = Any
Batch = dict[str, jax.Array]
TASK_TERM = "task"


def _tree_all_finite(tree: PyTree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _split_microbatches(batch: Batch, m: int, mesh: Mesh, batch_axes: tuple[str, ...] = BATCH_AXES) -> Batch:
    """[B, ...] -> [m, B/m, ...] with microbatch i = rows i, i+m, i+2m ... (strided, so that each
    device's rows are spread over all microbatches and no device idles)."""

    def split(x):
        x = x.reshape(x.shape[0] // m, m, *x.shape[1:]).swapaxes(0, 1)
        spec = P(None, batch_axes or None, *([None] * (x.ndim - 2)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return jax.tree.map(split, batch)


def _zeros_like_sums(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)


def make_train_step(task: Task, model: nn.Module, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, stages: Sequence[Stage], mesh: Mesh,
                    microbatches: int = 1, *, grad_comm: GradComm | None = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict, dict]]:
    """The un-jitted pure step; see `jit_train_step`. `grad_comm` must be the one the state was
    initialised with (`init_train_state(..., grad_comm=)`)."""
    stages = check_stages(stages)
    grad_comm = grad_comm or ExactMean()
    deterministic = getattr(model, "cfg", None) is None or model.cfg.dropout == 0.0
    # Global names of the terms whose gradients stages asked for, in a fixed order.
    requested = tuple(dict.fromkeys(
        TASK_TERM if t == TASK_TERM else f"{s.name}/{t}" for s in stages for t in s.grad_terms))

    def terms_and_stats(params, stage_states, batch, key):
        """({term: Stat}, {"task": task stats, stage name: stage stats}) for `batch`."""
        outputs = task.apply(model, params, batch, deterministic=deterministic, rngs={"dropout": key})
        task_term, task_stats = task.loss(outputs, batch)
        terms, stats = {TASK_TERM: task_term}, {TASK_TERM: task_stats}
        for stage in stages:
            stage_terms, stats[stage.name] = stage.loss(params, stage_states[stage.name], batch, outputs,
                                                        stage_key(key, stage.name, "loss"))
            terms.update({f"{stage.name}/{k}": v for k, v in stage_terms.items()})
        missing = [t for t in requested if t not in terms]
        if missing:
            raise HoloError(f"stages asked for the gradients of loss terms {missing}, which no stage returns; "
                            f"terms are: {sorted(terms)}.")
        return terms, stats

    def microbatch(params, stage_states, batch, key, counts, scale):
        """(scale x gradient of this batch's part of the objective, its sums, its term gradients)."""

        def parts(p):
            terms, stats = terms_and_stats(p, stage_states, batch, key)
            return {n: safe_divide(t.sum, counts[n]) for n, t in terms.items()}, (terms, stats)

        if not requested:
            def objective(p):
                values, aux = parts(p)
                total = functools.reduce(operator.add, values.values())
                return (total if scale == 1.0 else scale * total), aux

            (_, (terms, stats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
            term_grads = {}
        else:
            values, pull_back, (terms, stats) = jax.vjp(parts, params, has_aux=True)
            ones = jax.tree.map(jnp.ones_like, values)
            term_grads = {n: pull_back({m: (v if m == n else jnp.zeros_like(v)) for m, v in ones.items()})[0]
                          for n in requested}
            if set(requested) == set(values):
                # Every term's gradient is at hand: the total is their sum, no further pull-back.
                grads = jax.tree.map(lambda *g: scale * functools.reduce(operator.add, g), *term_grads.values())
            else:
                (grads,) = pull_back(jax.tree.map(lambda x: scale * x, ones))
        sums = as_float32({"terms": terms, "stats": stats, "term_grads": term_grads})
        return as_float32(grads), sums

    def gradients(params, stage_states, counts, batch, key, batch_axes, scale):
        """GradFn for `grad_comm` (see holo_jax.parallel.grad_comm): microbatches accumulated under scan."""
        if microbatches == 1:
            return microbatch(params, stage_states, batch, key, counts, scale)
        micro = _split_microbatches(batch, microbatches, mesh, batch_axes)

        def body(acc, xs):
            i, mb = xs
            out = microbatch(params, stage_states, mb, jax.random.fold_in(key, i), counts, scale)
            return jax.tree.map(jnp.add, acc, out), None

        shapes = jax.eval_shape(lambda mb: microbatch(params, stage_states, mb, key, counts, scale),
                                jax.tree.map(lambda x: x[0], micro))
        acc, _ = jax.lax.scan(body, _zeros_like_sums(shapes), (jnp.arange(microbatches), micro))
        return acc

    def train_step(state: TrainState, batch: Batch):
        with nn.logical_axis_rules(LOGICAL_AXIS_RULES):
            key = jax.random.fold_in(state.rng, state.step)
            # Counts over the global batch; the model's part of this trace is unused and pruned.
            counts = {n: t.count for n, t in terms_and_stats(state.params, state.stage_states, batch, key)[0].items()}

            def grad_fn(b, k, batch_axes, scale):
                return gradients(state.params, state.stage_states, counts, b, k, batch_axes, scale)

            (grads, sums), grad_comm_state = grad_comm.aggregate(grad_fn, batch, key, state.grad_comm)
            terms, stats, term_grads = sums["terms"], sums["stats"], sums["term_grads"]

            stage_states = dict(state.stage_states)
            for stage in stages:
                wanted = {t: term_grads[TASK_TERM if t == TASK_TERM else f"{stage.name}/{t}"] for t in stage.grad_terms}
                grads, stage_states[stage.name] = stage.grads(grads, wanted, stage_states[stage.name],
                                                              stats[stage.name], stage_key(key, stage.name, "grads"))
            grad_norm = optax.global_norm(grads)  # of what the optimizer gets, after the stages' transforms
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            for stage in stages:
                stage_states[stage.name] = stage.update(stage_states[stage.name], stats[stage.name],
                                                        stage_key(key, stage.name, "update"))
            # What is applied must be finite, not only the gradients: a NaN learning rate or a
            # stage that diverges would otherwise write NaN parameters on a "finite" step. Two norms
            # decide it without a pass of their own over the parameters: the gradient norm is finite
            # iff every gradient is (or its squares overflow float32, norm > 1.8e19, which is no step
            # to take either), and the new parameters' norm is finite iff every new parameter is,
            # which (the old ones being finite) holds iff every update is; the moments are finite
            # averages of finite gradients. The norm is logged as `param_norm`: no further pass.
            new_param_norm = optax.global_norm(params)
            finite = jnp.isfinite(grad_norm) & jnp.isfinite(new_param_norm) & _tree_all_finite(stage_states)

            stepped = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                    stage_states=stage_states, grad_comm=grad_comm_state)
            skipped = state.replace(step=state.step + 1, skipped_steps=state.skipped_steps + 1)
            # A select, though it reads both versions of the state: a `lax.cond` over the state (measured
            # 10% less traffic) aborts XLA:CPU (jax 0.10.2) on a sharded, microbatched step with the int8
            # residual (tests/fairness/test_stage_runs.py), even with the residual kept out of the cond.
            new_state = jax.tree.map(lambda a, b: jnp.where(finite, a, b), stepped, skipped)
            # The norm of the parameters the step leaves: a skipped step's is computed only then.
            param_norm = jax.lax.cond(finite, lambda: new_param_norm, lambda: optax.global_norm(state.params))

            total = functools.reduce(operator.add, [safe_divide(t.sum, counts[n]) for n, t in terms.items()])
            metrics = {
                "loss": terms[TASK_TERM].mean(),
                "total_loss": total,
                "grad_norm": grad_norm,
                # optax counts applied updates only, so after a skipped step its schedule runs
                # behind the step counter by the number of skips: log the rate it used.
                "learning_rate": schedule(state.step - state.skipped_steps),
                "param_norm": param_norm,
                "finite": finite,
                "skipped_steps": new_state.skipped_steps,
            }
            for name, value in means(stats[TASK_TERM]).items():
                if name in RESERVED_NAMES:
                    raise HoloError(f"the task reports a metric named `{name}`, which the step reports itself.")
                metrics[name] = value
            emitted = {}
            for stage in stages:
                stage_stats = stats[stage.name]
                for k, v in stage.metrics(new_state.stage_states[stage.name], stage_stats).items():
                    metrics[f"{stage.name}/{k}"] = v
                if stage.emit_every:
                    emitted[stage.name] = stage.emit(new_state.stage_states[stage.name], stage_stats)
            return new_state, metrics, emitted

    return train_step


def jit_train_step(step_fn: Callable, state_shardings: TrainState, example_batch: Batch, mesh: Mesh):
    """Jit once with explicit shardings; the input state's buffers are donated to the output."""
    return jax.jit(
        step_fn,
        in_shardings=(state_shardings, tree_batch_sharding(mesh, example_batch)),
        out_shardings=(state_shardings, replicated(mesh), replicated(mesh)),
        donate_argnums=(0,),
    )


def make_eval_step(task: Task, model: nn.Module, mesh: Mesh, example_batch: Batch, param_shardings: PyTree):
    """Jitted `(params, batch) -> {"sums": {name: Stat}, "rows": {name: per-example array}}`;
    sums pool over batches, rows are what metrics such as AUC need example by example."""

    def eval_step(params, batch):
        with nn.logical_axis_rules(LOGICAL_AXIS_RULES):
            outputs = task.apply(model, params, batch, deterministic=True)
            sums, rows = task.eval_batch(outputs, batch)
            return {"sums": as_float32(sums), "rows": rows}

    return jax.jit(eval_step, in_shardings=(param_shardings, tree_batch_sharding(mesh, example_batch)),
                   out_shardings=replicated(mesh))


def pooled(sums: list[dict[str, Stat]]) -> dict[str, tuple[float, float]]:
    """Host: (sum, count) per name, added over evaluation batches."""
    out: dict[str, tuple[float, float]] = {}
    for batch_sums in sums:
        for name, stat in batch_sums.items():
            s, c = out.get(name, (0.0, 0.0))
            out[name] = (s + float(stat.sum), c + float(stat.count))
    return out


__all__ = ["TASK_TERM", "is_stat", "jit_train_step", "make_eval_step", "make_train_step", "pooled"]
