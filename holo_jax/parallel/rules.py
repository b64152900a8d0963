"""Logical axis names -> mesh axes: the one table that decides how everything is sharded.

Mesh axes: `data` (pure data parallel: replicas of the parameters), `fsdp` (data parallel
that also shards parameters and optimizer state, ZeRO-3 style) and `tensor` (Megatron-style
sharding of heads, MLP width and vocabulary, kept inside a fast NVLink island).
Parameters use the names `embed`, `heads`, `kv`, `mlp`, `vocab`, `length`, `layers`;
activations use `batch`, `length` and `act_*` so sharding a weight's `embed` dimension over
`fsdp` does not also shard activations by width.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


def logical_to_sharding(logical_specs: Any, mesh: Mesh) -> Any:
    """Map a tree of logical PartitionSpecs to NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, LOGICAL_AXIS_RULES)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Rows over every data-parallel axis, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def tree_batch_sharding(mesh: Mesh, tree: Any) -> Any:
    """A batch sharding for every leaf of `tree` (leading dimension = rows)."""
    return jax.tree.map(lambda x: batch_sharding(mesh, len(x.shape)), tree)
