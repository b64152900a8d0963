"""How the train step averages gradients over data-parallel replicas (`grad_comm` in the config).

`ExactMean` (scheme `fp32`, the default) differentiates the global-batch loss under jit; the
compiler inserts the float32 reduction over every batch axis. It has no state and adds no
operation, so the step compiles exactly as it does without it.

`QuantizedMean` (schemes `bf16`, `int8`, `int4`) makes the reduction over the slow axes
(`data` by default: the axis the topology plan lays across hosts) explicit so it can be encoded:

  1. per-replica gradients: `jax.vmap` of the gradient function over the replicas' rows with
     `spmd_axis_name` = the quantized axes, so each replica's gradient is a slice of a
     [replicas, ...] array sharded over those axes, while `fsdp`/`tensor` stay under automatic
     sharding (the compiler still reduces over `fsdp` inside each replica, in float32 — the fast,
     intra-host part of a hierarchical reduction);
  2. aggregation: each replica's gradients are packed into one float32 bucket, [replicas, size]
     with `size` split over the other mesh axes, and a `jax.shard_map` manual over every axis
     runs `grad_comm.quantized_gradient_mean` across the quantized axes on each device's part
     (so each device encodes and sends only its part), then reassembles the replica's bucket
     over the fast axes in float32. The mean is identical on every replica.

Why vmap rather than running the model inside the shard_map: with the model inside a partially
manual shard_map, XLA (jax 0.10.2, Shardy) aborts with a CHECK failure in the SPMD partitioner on
the embedding gather when the table is sharded over `fsdp` and `tensor` at once
(`spmd_partitioner_util.cc` "partition_group_list.num_replica_groups() * ..."); vmap keeps the
model under automatic sharding on every mesh and confines the manual region to the collective.

The error-feedback residuals and rounding key live in `TrainState.grad_comm` with a leading
dimension of one slot per replica, sharded over the quantized axes (and the block dimension over
the other axes), so they are checkpointed and restored with the rest of the state.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from holo_jax.config import GradCommConfig
from holo_jax.errors import HoloError
from holo_jax.parallel.collectives import Residuals
from holo_jax.parallel.grad_comm import QuantizedGradientMeanState, quantized_gradient_mean
from holo_jax.parallel.quantize import Codec
from holo_jax.parallel.rules import BATCH_AXES, LOGICAL_AXIS_RULES

PyTree = Any
Batch = dict[str, jax.Array]
# (batch, key, batch_axes) -> (float32 gradients, aux): the mean over `batch`, whose rows are
# sharded over the mesh axes `batch_axes`; `aux` holds float scalars (loss terms) to average.
GradFn = Callable[[Batch, jax.Array, tuple[str, ...]], tuple[PyTree, PyTree]]


class GradComm(Protocol):
    def init(self, params: PyTree) -> PyTree:
        """The aggregation's state (part of TrainState, checkpointed)."""

    def partition_specs(self, abstract_state: PyTree) -> PyTree:
        """PartitionSpecs in *mesh* axes for `init`'s output."""

    def aggregate(self, grad_fn: GradFn, batch: Batch, key: jax.Array, state: PyTree
                  ) -> tuple[tuple[PyTree, PyTree], PyTree]:
        """((mean gradients, mean aux) over the global batch, new state)."""


class ExactMean:
    """The compiler's float32 reduction: no state, no extra operation."""

    def init(self, params: PyTree) -> PyTree:
        return ()

    def partition_specs(self, abstract_state: PyTree) -> PyTree:
        return ()

    def aggregate(self, grad_fn: GradFn, batch: Batch, key: jax.Array, state: PyTree
                  ) -> tuple[tuple[PyTree, PyTree], PyTree]:
        return grad_fn(batch, key, BATCH_AXES), state


def _rules_without(axes: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    """LOGICAL_AXIS_RULES with `axes` removed from the targets: inside the vmap those axes belong
    to the replica dimension, and a sharding constraint may not name them a second time."""

    def strip(target):
        if isinstance(target, tuple):
            kept = tuple(a for a in target if a not in axes)
            return kept or None
        return None if target in axes else target

    return tuple((name, strip(target)) for name, target in LOGICAL_AXIS_RULES)


def _local(tree: PyTree) -> PyTree:
    """Inside the shard_map each device sees its replica's slot of the leading dimension (size 1)."""
    return jax.tree.map(lambda x: x[0], tree)


def _stacked(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: x[None], tree)


@dataclasses.dataclass(frozen=True)
class QuantizedMean:
    """Per-replica gradients averaged by a quantized all-reduce over the mesh axes `axes`.

    The gradients travel as one float32 bucket per replica, [replicas, size] with the size split
    over the other mesh axes (`inner_axes`). The collective's shard_map is manual over *every*
    axis, so each device encodes and sends only its own part of its replica's bucket; left to
    automatic sharding inside a replica, the compiler replicates the bucket there and every
    device would send all of it."""

    mesh: Mesh
    axes: tuple[str, ...]
    codec: Codec
    error_feedback: bool = True
    seed: int = 0

    @property
    def transform(self) -> optax.GradientTransformation:
        return quantized_gradient_mean(self.axes, self.codec, error_feedback=self.error_feedback, seed=self.seed)

    @property
    def replicas(self) -> int:
        return math.prod(self.mesh.shape[a] for a in self.axes)

    @property
    def inner_axes(self) -> tuple[str, ...]:
        return tuple(a for a in self.mesh.axis_names if a not in self.axes and self.mesh.shape[a] > 1)

    def _bucket_size(self, size: int) -> int:
        """`size` (the parameter count) rounded up so every device's part is whole blocks."""
        unit = self.replicas * math.prod(self.mesh.shape[a] for a in self.inner_axes) * self.codec.block_size
        return -(-size // unit) * unit

    def _manual(self, fn: Callable, in_specs: Any, out_specs: Any) -> Callable:
        return jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs)

    def init(self, params: PyTree) -> PyTree:
        # The transform's init asks for the axis size, so it runs on each device inside the shard_map.
        inner = math.prod(self.mesh.shape[a] for a in self.inner_axes)
        size = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
        part = jax.ShapeDtypeStruct((self._bucket_size(size) // inner,), jnp.float32)
        return self._manual(lambda: _stacked(self.transform.init(part)), (), self.partition_specs(None))()

    def partition_specs(self, abstract_state: PyTree) -> QuantizedGradientMeanState:
        """The state's layout follows from the configuration: [replicas, ...] over `axes`, blocks
        over `inner_axes`."""
        inner = self.inner_axes or None
        residuals = None
        if self.error_feedback:
            # sent [replicas, D, blocks, B], owned [replicas, blocks, B]
            residuals = Residuals(sent=P(self.axes, None, inner, None), owned=P(self.axes, inner, None))
        rng_key = P(self.axes, None) if self.codec.needs_key else None
        return QuantizedGradientMeanState(residuals, rng_key)

    def aggregate(self, grad_fn: GradFn, batch: Batch, key: jax.Array, state: PyTree
                  ) -> tuple[tuple[PyTree, PyTree], PyTree]:
        replicas = self.replicas
        inner_batch_axes = tuple(a for a in BATCH_AXES if a not in self.axes)

        def by_replica(x: jax.Array) -> jax.Array:
            # [B, ...] -> [replicas, B / replicas, ...]: replica i owns the i-th block of rows,
            # which is how the batch sharding already lays them out (no data moves).
            x = x.reshape(replicas, x.shape[0] // replicas, *x.shape[1:])
            spec = P(self.axes, inner_batch_axes or None, *([None] * (x.ndim - 2)))
            return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

        # Independent randomness (dropout) per replica, as slices of one global batch would get.
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(replicas))
        with nn.logical_axis_rules(_rules_without(self.axes)):
            grads, aux = jax.vmap(lambda b, k: grad_fn(b, k, inner_batch_axes),
                                  spmd_axis_name=self.axes)(jax.tree.map(by_replica, batch), keys)
        aux = jax.tree.map(lambda x: jnp.mean(x, axis=0), aux)  # replicas hold equal numbers of rows

        leaves, treedef = jax.tree.flatten(grads)
        size = sum(math.prod(x.shape[1:]) for x in leaves)
        bucket = jnp.concatenate([x.reshape(replicas, -1).astype(jnp.float32) for x in leaves], axis=1)
        bucket = jnp.pad(bucket, ((0, 0), (0, self._bucket_size(size) - size)))
        inner = self.inner_axes or None
        bucket = jax.lax.with_sharding_constraint(bucket, NamedSharding(self.mesh, P(self.axes, inner)))

        def reduce(part: jax.Array, local_state: PyTree) -> tuple[jax.Array, PyTree]:
            mean, new_state = self.transform.update(part[0], _local(local_state))
            if self.inner_axes:
                # Reassemble the replica's bucket here, over the fast axes only: left to automatic
                # sharding, the compiler is free to fetch parts from another replica's identical
                # copy, i.e. across the slow axis, in float32.
                mean = jax.lax.all_gather(mean, self.inner_axes, axis=0, tiled=True, to="invarying")
            return mean, _stacked(new_state)

        specs = self.partition_specs(state)
        mean, state = self._manual(reduce, (P(self.axes, inner), specs), (P(), specs))(bucket, state)

        out, offset = [], 0
        for x in leaves:
            n = math.prod(x.shape[1:])
            out.append(mean[offset:offset + n].reshape(x.shape[1:]).astype(x.dtype))
            offset += n
        return (jax.tree.unflatten(treedef, out), aux), state


def pure_data_axes() -> tuple[str, ...]:
    """Batch axes that shard no parameter or activation width: the only axes where each device
    holds a whole replica's gradient, which is what the quantized all-reduce averages."""
    sharding_other_things = set()
    for name, target in LOGICAL_AXIS_RULES:
        if name != "batch":
            sharding_other_things.update(target if isinstance(target, tuple) else (target,))
    return tuple(a for a in BATCH_AXES if a not in sharding_other_things)


def make_grad_comm(cfg: GradCommConfig, mesh: Mesh, seed: int = 0) -> GradComm:
    """The aggregation `cfg` asks for on `mesh`; one clear error for a setting that cannot work."""
    if cfg.scheme == "fp32":
        return ExactMean()
    try:
        codec = Codec(cfg.scheme, cfg.block_size, cfg.rounding)
    except ValueError as e:
        raise HoloError(f"grad_comm: {e}; set grad_comm.scheme to fp32, bf16, int8 or int4.") from None
    axes = tuple(cfg.axes)
    allowed = pure_data_axes()
    if not axes or any(a not in allowed for a in axes):
        raise HoloError(
            f"grad_comm.axes={','.join(axes) or '(empty)'} must name pure data-parallel mesh axes "
            f"({', '.join(allowed)}): the quantized all-reduce averages whole per-replica gradients, "
            f"and other axes also shard parameters."
        )
    if math.prod(mesh.shape[a] for a in axes) == 1:
        return ExactMean()  # a single replica: nothing crosses these axes, so there is nothing to encode
    return QuantizedMean(mesh, axes, codec, cfg.error_feedback, seed)
