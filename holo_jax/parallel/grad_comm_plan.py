"""Resolving `grad_comm` in the config against a mesh: which axes are quantized, the island size
of the hierarchical variant, and the aggregation object the step uses (holo_jax.parallel.grad_comm).

The slow axes are read from the mesh: the pure data-parallel axes whose devices sit in different
processes (on GPU clusters a process is a host, and the topology planner lays `data` across
hosts), or `data` on a single process, so the feature can be simulated and tested there.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np
from jax.sharding import Mesh

from holo_jax.config import GradCommConfig
from holo_jax.errors import HoloError
from holo_jax.parallel.grad_comm import ExactMean, GradComm, QuantizedMean
from holo_jax.parallel.mesh import cross_process_axes, process_grid
from holo_jax.parallel.quantize import Codec
from holo_jax.parallel.rules import BATCH_AXES, LOGICAL_AXIS_RULES

logger = logging.getLogger(__name__)


def pure_data_axes() -> tuple[str, ...]:
    """Batch axes that shard no parameter or activation width: the only axes where each device
    holds a whole replica's gradient, which is what the quantized all-reduce averages."""
    sharding_other_things = set()
    for name, target in LOGICAL_AXIS_RULES:
        if name != "batch":
            sharding_other_things.update(target if isinstance(target, tuple) else (target,))
    return tuple(a for a in BATCH_AXES if a not in sharding_other_things)


@dataclasses.dataclass(frozen=True)
class GradCommPlan:
    """What the config resolves to on a mesh (`plan_grad_comm`)."""

    scheme: str
    axes: tuple[str, ...]  # the quantized mesh axes; empty: the compiler's exact float32 reduction
    axes_source: str  # "config" (grad_comm.axes given) or "mesh" (derived from the processes)
    island: int  # devices along the quantized axis reduced in float32 first; 1: flat
    cross_process_axes: tuple[str, ...]  # mesh axes whose devices sit in different processes
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _process_island(processes: np.ndarray, axis: int) -> int:
    """The largest run of consecutive devices along `axis` that share a process everywhere in the
    mesh and tile the axis evenly (1 if none): the island a hierarchical reduction can use."""
    along = np.moveaxis(processes, axis, 0)
    n = along.shape[0]
    for run in range(n, 1, -1):
        if n % run == 0:
            runs = along.reshape(n // run, run, -1)
            if np.all(runs == runs[:, :1]):
                return run
    return 1


def plan_grad_comm(cfg: GradCommConfig, mesh: Mesh, processes: np.ndarray | None = None) -> GradCommPlan:
    """Resolve the quantized axes and the island size for `mesh`; one clear error for a setting that
    cannot work. `processes` (the process index of each mesh position; default: from the devices)
    lets tests lay one process out as several hosts."""
    processes = process_grid(mesh) if processes is None else np.asarray(processes)
    crossing = cross_process_axes(mesh, processes)
    allowed = pure_data_axes()
    if cfg.scheme == "fp32":
        return GradCommPlan("fp32", (), "mesh", 1, crossing)
    if cfg.axes:
        axes, source = tuple(cfg.axes), "config"
        if any(a not in allowed for a in axes):
            raise HoloError(
                f"grad_comm.axes={','.join(axes)} must name pure data-parallel mesh axes "
                f"({', '.join(allowed)}): the quantized all-reduce averages whole per-replica gradients, "
                f"and other axes also shard parameters; set grad_comm.axes=data or leave it empty to follow the mesh."
            )
    else:
        # The slow fabric is what joins processes (hosts); a single process has no slow link, and
        # the data axis is quantized there so the feature can be simulated and tested.
        axes, source = (tuple(a for a in allowed if a in crossing) if crossing else ("data",)), "mesh"
    warnings = []
    full_precision = [a for a in crossing if a not in axes]
    if full_precision:
        warnings.append(
            f"grad_comm={cfg.scheme}: mesh axes {', '.join(full_precision)} cross processes but the quantized "
            f"all-reduce covers only pure data-parallel axes, so their cross-host gradient traffic stays float32"
            + ("" if axes else "; no data axis crosses processes, so gradients are averaged exactly") + ".")
    replicas = math.prod(mesh.shape[a] for a in axes)
    if cfg.island < 0:
        raise HoloError(f"grad_comm.island={cfg.island} must be 0 (auto), 1 (flat) or a number of devices.")
    island = cfg.island
    if island == 0:  # auto: the devices of one process, when the quantized axis crosses processes
        island = 1
        if len(axes) == 1 and axes[0] in crossing:
            island = _process_island(processes, mesh.axis_names.index(axes[0]))
    elif island > 1:
        if len(axes) != 1 or replicas % island or island == replicas:
            raise HoloError(
                f"grad_comm.island={island} must divide the quantized axis ({'x'.join(axes)}, {replicas} devices) "
                f"into at least two islands; choose a proper divisor of {replicas}, or 1 for a flat all-reduce."
            )
    return GradCommPlan(cfg.scheme, axes if replicas > 1 else (), source, island, crossing, tuple(warnings))


def resolve_grad_comm(cfg: GradCommConfig, mesh: Mesh, processes: np.ndarray | None = None) -> GradCommConfig:
    """`cfg` with the axes and island size it resolves to on `mesh` written in, so that the config
    the run records (the `run_start` event) says what was quantized, not just "auto"."""
    if cfg.scheme == "fp32":
        return cfg
    plan = plan_grad_comm(cfg, mesh, processes)
    return dataclasses.replace(cfg, axes=plan.axes, island=plan.island)


def make_grad_comm(cfg: GradCommConfig, mesh: Mesh, seed: int = 0, *,
                   processes: np.ndarray | None = None) -> GradComm:
    """The aggregation `cfg` asks for on `mesh` (see `plan_grad_comm`); one clear error for a
    setting that cannot work; the plan's warnings (cross-host traffic left in float32) go to the log."""
    try:
        codec = Codec(cfg.scheme, cfg.block_size, cfg.rounding) if cfg.scheme != "fp32" else None
    except ValueError as e:
        raise HoloError(f"grad_comm: {e}; set grad_comm.scheme to fp32, bf16, int8 or int4.") from None
    plan = plan_grad_comm(cfg, mesh, processes)
    for warning in plan.warnings:
        logger.warning(warning)
    if codec is None or not plan.axes:
        # fp32, or a single replica (nothing crosses the axes, so there is nothing to encode).
        return ExactMean()
    return QuantizedMean(mesh, plan.axes, codec, cfg.error_feedback, seed, plan.island)
