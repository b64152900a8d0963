"""The train state and how it is laid out on the mesh.

`TrainState` is one pytree: step, float32 master parameters, optimizer state, one state per
stage (keyed by the stage's name), the base random key, the count of skipped (non-finite) steps and the gradient
aggregation's state (error-feedback residuals; empty for the default exact mean). Everything in
it is checkpointed, so a resumed run continues bit-for-bit.

Shardings are derived, never written by hand: `jax.eval_shape` of the boxed init gives each
parameter's logical axes; `optax.tree_map_params` carries them onto the optimizer state's
parameter-shaped leaves; stages declare their own; the rule table maps all of it to the mesh.
The aggregation state alone is laid out in mesh axes: its leading dimension holds one slot per
data-parallel replica, which has no logical name.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from holo_jax.parallel.grad_comm import ExactMean, GradComm
from holo_jax.parallel.rules import logical_to_sharding
from holo_jax.train.stages import Stage, check_stages, stage_key

PyTree = Any


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of steps taken (skipped ones included)
    params: PyTree
    opt_state: PyTree
    stage_states: dict  # stage name -> that stage's own state
    rng: jax.Array  # raw uint32[2] key; per-step randomness is fold_in(rng, step)
    skipped_steps: jax.Array  # int32 scalar: steps whose gradients were not finite
    grad_comm: PyTree = ()  # the GradComm's state, e.g. per-replica error-feedback residuals


def overlay_params(params: PyTree, given: PyTree, at: str = "params") -> PyTree:
    """`params` with every leaf that `given` holds replaced by it. `given` is a nested dict whose
    paths are a subset of `params`'s (e.g. `{"decoder": {...}}`: a warm start's restored decoder);
    every array it holds must have its counterpart's shape and dtype."""
    if given is None:
        return params
    if isinstance(given, Mapping):
        if not isinstance(params, Mapping):
            raise ValueError(f"{at} is an array, but the given parameters have a subtree there")
        unknown = sorted(set(given) - set(params))
        if unknown:
            raise ValueError(f"the given parameters name {at}.{unknown[0]}, which the model does not have")
        return {k: overlay_params(v, given[k], f"{at}.{k}") if k in given else v for k, v in params.items()}
    if isinstance(params, Mapping) or (jnp.shape(given), jnp.result_type(given)) != (params.shape, params.dtype):
        raise ValueError(f"{at}: the given parameter is {jnp.shape(given)} {jnp.result_type(given)}, the model's is "
                         f"{jax.tree.map(lambda x: (x.shape, x.dtype), params)}")
    return given


def _boxed_init(model: nn.Module, example_inputs: tuple, optimizer: optax.GradientTransformation,
                stages: Sequence[Stage], seed: int, grad_comm: GradComm):
    """Init function `(given params or None) -> (boxed params, unboxed TrainState)`: the model's
    fresh parameters, with the given ones (`overlay_params`) in their place before the optimizer,
    the stages and the aggregation are initialised from them."""

    stages = check_stages(stages)

    def init(given):
        root = jax.random.PRNGKey(seed)
        k_params, k_stages, k_run = jax.random.split(root, 3)
        boxed = model.init({"params": k_params, "dropout": k_params}, *example_inputs)["params"]
        params = overlay_params(nn.unbox(boxed), given)
        state = TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            stage_states={s.name: s.init(stage_key(k_stages, s.name, "init"), params) for s in stages},
            rng=k_run,
            skipped_steps=jnp.zeros((), jnp.int32),
            grad_comm=grad_comm.init(params, nn.get_partition_spec(boxed)),
        )
        return boxed, state

    return init


def state_logical_specs(model: nn.Module, example_inputs: tuple, optimizer: optax.GradientTransformation,
                        stages: Sequence[Stage], seed: int = 0, *, grad_comm: GradComm | None = None
                        ) -> tuple[TrainState, TrainState]:
    """(abstract TrainState, TrainState of logical PartitionSpecs) without allocating anything.

    `grad_comm`'s specs are in mesh axes (see the module docstring); `state_shardings` maps both."""
    grad_comm = grad_comm or ExactMean()
    boxed, abstract = jax.eval_shape(_boxed_init(model, example_inputs, optimizer, stages, seed, grad_comm), None)
    param_specs = nn.get_partition_spec(boxed)
    is_spec = lambda x: isinstance(x, P)  # noqa: E731
    opt_specs = optax.tree_map_params(
        optimizer, lambda _, spec: spec, abstract.opt_state, param_specs,
        transform_non_params=lambda _: P(), is_leaf=is_spec,
    )
    stage_specs = {s.name: s.partition_specs(abstract.stage_states[s.name], param_specs) for s in stages}
    specs = TrainState(step=P(), params=param_specs, opt_state=opt_specs, stage_states=stage_specs,
                       rng=P(), skipped_steps=P(), grad_comm=grad_comm.partition_specs(abstract.grad_comm))
    return abstract, specs


def state_shardings(specs: TrainState, mesh: Mesh) -> TrainState:
    """NamedShardings for the specs of `state_logical_specs`."""
    shardings = logical_to_sharding(specs.replace(grad_comm=()), mesh)
    grad_comm = jax.tree.map(lambda s: NamedSharding(mesh, s), specs.grad_comm, is_leaf=lambda x: isinstance(x, P))
    return shardings.replace(grad_comm=grad_comm)


def init_train_state(model: nn.Module, example_inputs: tuple, optimizer: optax.GradientTransformation,
                     stages: Sequence[Stage], mesh: Mesh, seed: int = 0, *, grad_comm: GradComm | None = None,
                     given_params: PyTree = None) -> tuple[TrainState, TrainState]:
    """Initialise the state directly into its shardings (no full copy on any one device).

    `given_params`: parameters to start from instead of the fresh ones (a nested dict of arrays,
    a subset of the model's parameter tree, e.g. a warm start's `{"decoder": ...}`, placed in this
    mesh's shardings); every other parameter, and everything initialised from the parameters, is
    exactly what a fresh start with `seed` gives. Returns (state, shardings)."""
    grad_comm = grad_comm or ExactMean()
    _, specs = state_logical_specs(model, example_inputs, optimizer, stages, seed, grad_comm=grad_comm)
    shardings = state_shardings(specs, mesh)
    init = _boxed_init(model, example_inputs, optimizer, stages, seed, grad_comm)
    # Donated: the given arrays become the state's parameters rather than a second copy of them.
    state = jax.jit(lambda given: init(given)[1], out_shardings=shardings, donate_argnums=0)(given_params)
    return state, shardings


def abstract_train_state(model: nn.Module, example_inputs: tuple, optimizer: optax.GradientTransformation,
                         stages: Sequence[Stage], mesh: Mesh, seed: int = 0, *, grad_comm: GradComm | None = None
                         ) -> tuple[TrainState, TrainState]:
    """ShapeDtypeStructs carrying shardings (the restore target for a checkpoint), and the shardings."""
    abstract, specs = state_logical_specs(model, example_inputs, optimizer, stages, seed, grad_comm=grad_comm)
    shardings = state_shardings(specs, mesh)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return target, shardings


def count_params(params: PyTree) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
