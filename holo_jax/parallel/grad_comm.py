"""How the train step averages gradients over data-parallel replicas (`grad_comm` in the config).

`ExactMean` (scheme `fp32`, the default) differentiates the global-batch loss under jit; the
compiler inserts the float32 reduction over every batch axis. It has no state and adds no
operation, so the step compiles exactly as it does without it.

`QuantizedMean` (schemes `bf16`, `int8`, `int4`) makes the reduction over the slow axes
explicit so it can be encoded. Which axes are slow is read from the mesh
(`holo_jax.parallel.grad_comm_plan`).

Both return the gradient of the step's objective over the global batch and the *sums* of the
statistics the gradient function reports: the step's one reduction rule is that statistics are
(sum, count) pairs added over microbatches and replicas alike and divided once, so they do not
depend on the scheme (holo_jax.train.stats).

  1. per-replica gradients: `jax.vmap` of the gradient function over the replicas' rows with
     `spmd_axis_name` = the quantized axes, so each replica's gradient is a slice of a
     [replicas, ...] array sharded over those axes, while `fsdp`/`tensor` stay under automatic
     sharding (the compiler still reduces over `fsdp` inside each replica, in float32 — the fast,
     intra-host part of a hierarchical reduction);
  2. aggregation: a `jax.shard_map` manual over every axis takes each gradient leaf in its
     parameter's own sharding (in_specs P(<quantized axes>, *the parameter's mesh spec)) and gives
     the mean back in it (out_specs: the parameter's spec), so the optimizer update needs no data
     movement and no device ever holds more than its share (1 / (fsdp x tensor)) of the float32
     gradient. Inside, each device concatenates its *local* shards into its part of the replica's
     bucket and runs `quantized_gradient_mean` across the quantized axes on that part
     (each device encodes and sends only its part). Leaves replicated over an inner axis (a
     LayerNorm scale on every `tensor` device) are identical on those devices: each takes a 1/n
     slice of them before encoding and the slices are all-gathered back after the mean, so every
     copy ends bit-identical and nothing is sent twice. The mean is identical on every replica.
     The parameters' specs come from their logical axes (`init(params, param_specs)`) and are kept
     in the state (`QuantizedMeanState.param_specs`, static), so `aggregate` knows the layout.
  3. hierarchical (`island` > 1, automatic when the quantized axis holds several devices of each
     process): the shard_map runs on a copy of the mesh whose quantized axis is split into
     (`<axis>_across`, `<axis>_within`) — same devices, same order, so no data moves — and the
     devices within an island first reduce-scatter their parts in float32, then each encodes only
     its 1/island share across islands, then the island all-gathers the part back in float32
     (ZeRO++'s hierarchical qgZ).

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
from flax import struct
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from holo_jax.parallel.collectives import Residuals
from holo_jax.parallel.quantize import Codec
from holo_jax.parallel.quantized_gradient_mean import QuantizedGradientMeanState, quantized_gradient_mean
from holo_jax.parallel.rules import BATCH_AXES, LOGICAL_AXIS_RULES

PyTree = Any
Batch = dict[str, jax.Array]
# (batch, key, batch_axes, scale) -> (float32 gradients, sums). `batch` is all or a replica's
# share of the global batch, its rows sharded over the mesh axes `batch_axes`. The gradients are
# those of `scale` x this batch's part of the step's objective (every loss term is a sum over rows
# divided by its count over the *global* batch, so the parts add up to the objective); `sums` are
# statistics (sum, count pairs, requested term gradients) that add up over replicas. See
# holo_jax.train.step.
GradFn = Callable[[Batch, jax.Array, tuple[str, ...], float], tuple[PyTree, PyTree]]


class GradComm(Protocol):
    def init(self, params: PyTree, param_specs: PyTree = None) -> PyTree:
        """The aggregation's state (part of TrainState, checkpointed); `param_specs`: the
        parameters' logical PartitionSpecs (`nn.get_partition_spec` of the boxed parameters)."""

    def partition_specs(self, abstract_state: PyTree) -> PyTree:
        """PartitionSpecs in *mesh* axes for `init`'s output."""

    def aggregate(self, grad_fn: GradFn, batch: Batch, key: jax.Array, state: PyTree
                  ) -> tuple[tuple[PyTree, PyTree], PyTree]:
        """((gradients of the objective over the global batch, sums over the global batch), new state)."""


class ExactMean:
    """The compiler's float32 reduction: no state, no extra operation."""

    def init(self, params: PyTree, param_specs: PyTree = None) -> PyTree:
        return ()

    def partition_specs(self, abstract_state: PyTree) -> PyTree:
        return ()

    def aggregate(self, grad_fn: GradFn, batch: Batch, key: jax.Array, state: PyTree
                  ) -> tuple[tuple[PyTree, PyTree], PyTree]:
        return grad_fn(batch, key, BATCH_AXES, 1.0), state


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


def _split_spec(spec: P, axis: str, parts: tuple[str, str]) -> P:
    """`spec` with mesh axis `axis` replaced by its two parts (major first): the same layout."""

    def split(entry):
        if entry == axis:
            return parts
        if isinstance(entry, tuple):
            return tuple(x for a in entry for x in (parts if a == axis else (a,)))
        return entry

    return P(*(split(e) for e in spec))


@struct.dataclass
class QuantizedMeanState:
    """`QuantizedMean`'s part of the train state: the transform's per-device state stacked one slot
    per replica (sharded; checkpointed), and — static, not an array — the mesh PartitionSpec of
    every gradient leaf it was laid out for (see `QuantizedMean.init`)."""

    residuals: Residuals | None  # sent [replicas, D, blocks, B], owned [replicas, blocks, B]
    rng_key: jax.Array | None  # [replicas, 2]
    param_specs: tuple[P, ...] = struct.field(pytree_node=False, default=())  # in tree-leaf order


@dataclasses.dataclass(frozen=True)
class _Group:
    """Gradient leaves replicated over the same inner axes `over`: each device along those axes
    holds identical copies, so it takes a 1/`ways` share of them (`share` values) to encode."""

    over: tuple[str, ...]
    leaves: tuple[int, ...]  # indices into the leaf list
    ways: int
    share: int


@dataclasses.dataclass(frozen=True)
class QuantizedMean:
    """Per-replica gradients averaged by a quantized all-reduce over the mesh axes `axes`.

    The collective's shard_map is manual over *every* axis, with each gradient leaf coming in
    and going out in its parameter's own sharding (`param_specs` in the state): each device packs
    its local shards into its part of the replica's bucket and encodes and sends only that part.
    Nothing is gathered over `fsdp`/`tensor`, so no device holds more of the float32 gradient than
    its share of the parameters. Leaves replicated over an inner axis (norm scales, biases) are
    split along it first and gathered back after the mean, so every copy ends identical and no
    copy is sent twice. With `island` > 1 (one quantized axis only) each run of `island`
    consecutive devices along it is reduced in float32 first and only the islands' means are
    encoded (see the module docstring)."""

    mesh: Mesh
    axes: tuple[str, ...]
    codec: Codec
    error_feedback: bool = True
    seed: int = 0
    island: int = 1

    def __post_init__(self):
        if self.island > 1 and (len(self.axes) != 1 or self.mesh.shape[self.axes[0]] % self.island):
            raise ValueError(f"island={self.island} needs one quantized axis whose size it divides, got {self.axes}")

    @property
    def _parts(self) -> tuple[str, str]:
        """Names of the quantized axis' two parts in the hierarchical mesh: (across, within)."""
        return f"{self.axes[0]}_across", f"{self.axes[0]}_within"

    @property
    def collective_mesh(self) -> Mesh:
        """The mesh the collective's shard_map runs on: `mesh`, or with `island` > 1 the same
        devices in the same order with the quantized axis split into (across, within) islands."""
        if self.island == 1:
            return self.mesh
        axis = self.axes[0]
        names, shape = [], []
        for name in self.mesh.axis_names:
            size = self.mesh.shape[name]
            if name == axis:
                names += self._parts
                shape += [size // self.island, self.island]
            else:
                names.append(name)
                shape.append(size)
        return Mesh(self.mesh.devices.reshape(shape), tuple(names), axis_types=(AxisType.Auto,) * len(names))

    @property
    def transform(self) -> optax.GradientTransformation:
        # The encoded exchange runs across islands only; the non-finite check spans every device,
        # so all of them agree on skipping (a NaN in one device's part reaches only some of the
        # others through the reduce-scatter, and they would otherwise update their residuals).
        encoded_axes = self.axes if self.island == 1 else self._parts[0]
        return quantized_gradient_mean(encoded_axes, self.codec, error_feedback=self.error_feedback, seed=self.seed,
                                       finite_axes=self.collective_mesh.axis_names)

    @property
    def replicas(self) -> int:
        return math.prod(self.mesh.shape[a] for a in self.axes)

    @property
    def inner_axes(self) -> tuple[str, ...]:
        return tuple(a for a in self.mesh.axis_names if a not in self.axes and self.mesh.shape[a] > 1)

    def _manual(self, fn: Callable, in_specs: Any, out_specs: Any) -> Callable:
        if self.island == 1:
            return jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs)
        mesh = self.collective_mesh
        split = lambda specs: jax.tree.map(lambda p: _split_spec(p, self.axes[0], self._parts), specs,  # noqa: E731
                                           is_leaf=lambda x: isinstance(x, P))
        mapped = jax.shard_map(fn, mesh=mesh, in_specs=split(in_specs), out_specs=split(out_specs))

        def call(*args):
            # Shardings on the split mesh equal those on `mesh` (same device order); the context
            # mesh of the surrounding jit must name the same axes as shard_map's mesh.
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                return mapped(*args)

        return call

    def _names(self, entry: Any) -> tuple[str, ...]:
        """The mesh axes of size > 1 in one entry of a PartitionSpec."""
        names = entry if isinstance(entry, tuple) else (() if entry is None else (entry,))
        return tuple(a for a in names if self.mesh.shape[a] > 1)

    def _mesh_spec(self, logical: Any) -> P:
        """A parameter's PartitionSpec in mesh axes (LOGICAL_AXIS_RULES), axes of size 1 left out
        (the same layout) so that a leaf's values vary over exactly the axes its spec names."""
        spec = nn.logical_to_mesh_axes(logical if isinstance(logical, P) else P(), LOGICAL_AXIS_RULES)
        if any(a in self.axes for e in spec for a in self._names(e)):
            raise ValueError(f"a parameter is sharded over the quantized axes {self.axes}: {spec}")
        entries = [self._names(e) for e in spec]
        return P(*(None if not e else e[0] if len(e) == 1 else e for e in entries))

    def _local_shape(self, shape: tuple[int, ...], spec: P) -> tuple[int, ...]:
        """One device's shard of a leaf of `shape` laid out by `spec`."""
        ways = [math.prod(self.mesh.shape[a] for a in self._names(spec[i])) if i < len(spec) else 1
                for i in range(len(shape))]
        if any(n % w for n, w in zip(shape, ways)):
            raise ValueError(f"a leaf of shape {shape} does not divide evenly over {spec}")
        return tuple(n // w for n, w in zip(shape, ways))

    def _layout(self, shapes: list[tuple[int, ...]], specs: tuple[P, ...]) -> tuple[list[_Group], int]:
        """How each device packs its local shards: groups of leaves by the inner axes they are
        replicated over, and the size of the device's part (whole blocks for every device of the
        quantized axes)."""
        by_axes: dict[tuple[str, ...], list[int]] = {}
        for i, spec in enumerate(specs):
            sharded = {a for e in spec for a in self._names(e)}
            by_axes.setdefault(tuple(a for a in self.inner_axes if a not in sharded), []).append(i)
        groups = []
        for over in sorted(by_axes, key=lambda o: (len(o), o)):
            leaves = tuple(by_axes[over])
            size = sum(math.prod(self._local_shape(shapes[i], specs[i])) for i in leaves)
            ways = math.prod(self.mesh.shape[a] for a in over)
            groups.append(_Group(over, leaves, ways, -(-size // ways)))
        unit = self.replicas * self.codec.block_size  # = island x (devices encoding) x block
        part = -(-sum(g.share for g in groups) // unit) * unit
        return groups, part

    def _transform_specs(self) -> QuantizedGradientMeanState:
        """The transform's state stacked per replica: [replicas, ...] over `axes`, blocks over `inner_axes`."""
        inner = self.inner_axes or None
        residuals = None
        if self.error_feedback:
            # sent [replicas, D, blocks, B], owned [replicas, blocks, B]; D = replicas / island
            residuals = Residuals(sent=P(self.axes, None, inner, None), owned=P(self.axes, inner, None))
        rng_key = P(self.axes, None) if self.codec.needs_key else None
        return QuantizedGradientMeanState(residuals, rng_key)

    def init(self, params: PyTree, param_specs: PyTree = None) -> QuantizedMeanState:
        """The state for `params`, whose logical PartitionSpecs (`nn.get_partition_spec` of the
        boxed parameters; None: every leaf replicated) fix how each device packs its shards."""
        leaves, treedef = jax.tree.flatten(params)
        if param_specs is None:
            logical = [P()] * len(leaves)
        else:
            logical = treedef.flatten_up_to(param_specs)
        specs = tuple(self._mesh_spec(s) for s in logical)
        _, part = self._layout([x.shape for x in leaves], specs)
        # The transform's init asks for the axis size, so it runs on each device inside the shard_map.
        local = jax.ShapeDtypeStruct((part // self.island,), jnp.float32)
        state = self._manual(lambda: _stacked(self.transform.init(local)), (), self._transform_specs())()
        return QuantizedMeanState(state.residuals, state.rng_key, specs)

    def partition_specs(self, abstract_state: QuantizedMeanState) -> QuantizedMeanState:
        """The state's layout follows from the configuration (see `_transform_specs`)."""
        specs = self._transform_specs()
        return QuantizedMeanState(specs.residuals, specs.rng_key, abstract_state.param_specs)

    def aggregate(self, grad_fn: GradFn, batch: Batch, key: jax.Array, state: QuantizedMeanState
                  ) -> tuple[tuple[PyTree, PyTree], QuantizedMeanState]:
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
        # Each replica's gradient is of `replicas` x its part of the objective, so that their mean
        # (what the quantized all-reduce computes) is the gradient of the whole objective; the
        # statistics are sums and add up exactly (float32 / integer reduction by the compiler).
        with nn.logical_axis_rules(_rules_without(self.axes)):
            grads, sums = jax.vmap(lambda b, k: grad_fn(b, k, inner_batch_axes, float(replicas)),
                                   spmd_axis_name=self.axes)(jax.tree.map(by_replica, batch), keys)
        sums = jax.tree.map(lambda x: jnp.sum(x, axis=0), sums)

        leaves, treedef = jax.tree.flatten(grads)
        specs = state.param_specs
        if len(specs) != len(leaves):
            raise ValueError(f"the grad_comm state was laid out for {len(specs)} parameters, got {len(leaves)} "
                             f"gradients: initialise it with this model (`init_train_state(..., grad_comm=)`)")
        groups, part_size = self._layout([x.shape[1:] for x in leaves], specs)
        local_shapes = [self._local_shape(x.shape[1:], s) for x, s in zip(leaves, specs)]
        within = (self._parts[1],) if self.island > 1 else ()

        def reduce(local: list[jax.Array], local_state: QuantizedGradientMeanState):
            # Each device's part of its replica's bucket, from its own shards only: per group, the
            # concatenated shards, and for a group replicated over inner axes this device's 1/ways
            # of the (identical) copies.
            flat = [x[0].reshape(-1).astype(jnp.float32) for x in local]
            pieces = []
            for g in groups:
                values = jnp.concatenate([flat[i] for i in g.leaves])
                if g.over:
                    values = jnp.pad(values, (0, g.ways * g.share - values.size)).reshape(g.ways, g.share)
                    values = values[jax.lax.axis_index(g.over)]
                pieces.append(values)
            part = jnp.concatenate(pieces)
            part = jnp.pad(part, (0, part_size - part.size))
            if within:
                # The island's float32 mean, each device keeping 1/island of it to send across.
                part = jax.lax.psum_scatter(part, within, scatter_dimension=0, tiled=True) / self.island
            mean, new_state = self.transform.update(part, _local(local_state))
            if within:
                mean = jax.lax.all_gather(mean, within, axis=0, tiled=True, to="invarying")
            out, offset = [None] * len(local), 0
            for g in groups:
                values = mean[offset:offset + g.share]
                offset += g.share
                if g.over:
                    # Reassemble the replicated leaves over the axes they are replicated on (fast
                    # axes, small leaves): every copy ends identical.
                    values = jax.lax.all_gather(values, g.over, axis=0, tiled=True, to="invarying")
                start = 0
                for i in g.leaves:
                    n = math.prod(local_shapes[i])
                    out[i] = values[start:start + n].reshape(local_shapes[i]).astype(local[i].dtype)
                    start += n
            return out, _stacked(new_state)

        transform_specs = self._transform_specs()
        inner_state = QuantizedGradientMeanState(state.residuals, state.rng_key)
        in_specs = ([P(self.axes, *s) for s in specs], transform_specs)
        mean, inner_state = self._manual(reduce, in_specs, (list(specs), transform_specs))(leaves, inner_state)
        new_state = QuantizedMeanState(inner_state.residuals, inner_state.rng_key, specs)
        return (jax.tree.unflatten(treedef, mean), sums), new_state
