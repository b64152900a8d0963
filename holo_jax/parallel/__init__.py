"""Parallelism: the device mesh, logical-axis sharding rules, and how gradients are averaged over
data-parallel replicas (exact, or a quantized all-reduce with error feedback). Joining the
processes of a job is `holo_jax.runtime`; choosing the mesh for a topology is `holo_jax.topology`."""
from holo_jax.parallel.collectives import (
    hierarchical_quantized_pmean, pmean_error_bound, quantized_pmean, quantized_psum, two_phase_pmean,
)
from holo_jax.parallel.grad_comm import ExactMean, GradComm, QuantizedMean, QuantizedMeanState
from holo_jax.parallel.grad_comm_plan import GradCommPlan, make_grad_comm, plan_grad_comm, resolve_grad_comm
from holo_jax.parallel.quantized_gradient_mean import QuantizedGradientMeanState, quantized_gradient_mean
from holo_jax.parallel.mesh import build_mesh, cross_process_axes
from holo_jax.parallel.quantize import Codec
from holo_jax.parallel.rules import LOGICAL_AXIS_RULES, MESH_AXES, batch_sharding, logical_to_sharding

__all__ = [
    "Codec", "ExactMean", "GradComm", "GradCommPlan", "LOGICAL_AXIS_RULES", "MESH_AXES", "QuantizedGradientMeanState",
    "QuantizedMean", "QuantizedMeanState", "batch_sharding", "build_mesh", "cross_process_axes", "hierarchical_quantized_pmean", "logical_to_sharding",
    "make_grad_comm", "plan_grad_comm", "pmean_error_bound", "quantized_gradient_mean", "quantized_pmean", "quantized_psum",
    "resolve_grad_comm", "two_phase_pmean",
]
