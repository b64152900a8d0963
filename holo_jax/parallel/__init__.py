"""Parallelism: the device mesh, logical-axis sharding rules, multi-process start-up."""
from holo_jax.parallel.mesh import build_mesh
from holo_jax.parallel.rules import LOGICAL_AXIS_RULES, MESH_AXES, batch_sharding, logical_to_sharding

__all__ = ["LOGICAL_AXIS_RULES", "MESH_AXES", "batch_sharding", "build_mesh", "logical_to_sharding"]
