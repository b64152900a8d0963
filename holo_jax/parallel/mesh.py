"""Build the device mesh (`data`, `fsdp`, `tensor`) from a MeshConfig or a topology plan.

Devices are ordered so that the fastest-varying mesh axis (`tensor`) stays inside one
process (one host's NVLink island on GPUs), and data-parallel axes span processes. On CPU
every device reports `slice_index=0`, so multi-process meshes group devices by process
(`process_is_granule`). The mesh uses `AxisType.Auto` so the compiler propagates shardings from
the jitted step's in/out shardings; `jax.make_mesh` would default to Explicit axes.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from holo_jax.config import MeshConfig, ModelConfig
from holo_jax.errors import HoloError
from holo_jax.parallel.rules import MESH_AXES


def resolve_axis_sizes(cfg: MeshConfig, device_count: int) -> tuple[int, int, int]:
    """Fill in the one `-1` axis and check the product equals the device count."""
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    if any(s == 0 or s < -1 for s in sizes):
        raise HoloError(f"mesh axis sizes must be positive or -1, got data={cfg.data} fsdp={cfg.fsdp} tensor={cfg.tensor}.")
    unknown = [i for i, s in enumerate(sizes) if s == -1]
    if len(unknown) > 1:
        raise HoloError("at most one mesh axis may be -1 (\"the rest of the devices\"); set the others explicitly.")
    known = math.prod(s for s in sizes if s != -1)
    if unknown:
        if device_count % known:
            raise HoloError(
                f"the fixed mesh axes (product {known}) do not divide the {device_count} devices; "
                f"choose sizes whose product divides {device_count}."
            )
        sizes[unknown[0]] = device_count // known
    if math.prod(sizes) != device_count:
        raise HoloError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {math.prod(sizes)} devices, "
            f"but {device_count} are available; make the product equal {device_count} (or set one axis to -1)."
        )
    return tuple(sizes)  # type: ignore[return-value]


def check_model_fits_mesh(model: ModelConfig, sizes: Sequence[int]) -> None:
    """Dimensions sharded by an axis must divide evenly; say which and what to change."""
    _, fsdp, tensor = sizes
    for name, value, axis, axis_size in (
        ("model.n_heads", model.n_heads, "tensor", tensor),
        ("model.d_ff", model.d_ff, "tensor", tensor),
        ("padded vocabulary", model.padded_vocab, "tensor", tensor),
        ("model.d_model", model.d_model, "fsdp", fsdp),
    ):
        if value % axis_size:
            raise HoloError(
                f"{name}={value} is not divisible by the {axis} axis ({axis_size}); "
                f"choose a {axis} size that divides {value} or change {name}."
            )
    if model.d_model % model.n_heads:
        raise HoloError(f"model.d_model={model.d_model} is not divisible by model.n_heads={model.n_heads}.")


def order_devices(devices: Sequence[jax.Device]) -> list[jax.Device]:
    """Process-major, then by local hardware id: consecutive devices share a host."""
    return sorted(devices, key=lambda d: (d.process_index, getattr(d, "local_hardware_id", None) or 0, d.id))


def process_grid(mesh: Mesh) -> np.ndarray:
    """The mesh's device grid as process indices (on GPU clusters a process is a host)."""
    return np.vectorize(lambda d: d.process_index, otypes=[int])(mesh.devices)


def cross_process_axes(mesh: Mesh, processes: np.ndarray | None = None) -> tuple[str, ...]:
    """Mesh axes along which devices belong to different processes: the axes whose collectives
    cross the slow inter-host fabric. `processes` (the grid of process indices, default from the
    devices) lets a test pretend one process is several hosts."""
    procs = process_grid(mesh) if processes is None else np.asarray(processes)
    return tuple(name for i, name in enumerate(mesh.axis_names)
                 if np.any(procs != np.take(procs, [0], axis=i)))


def build_mesh(
    cfg: MeshConfig,
    model: ModelConfig | None = None,
    devices: Sequence[jax.Device] | None = None,
    device_order: Sequence[int] | None = None,
) -> Mesh:
    """A `Mesh` with axes (data, fsdp, tensor).

    `device_order` (positions into the process-major device list, e.g. from a topology
    `MeshPlan`) overrides the default order; row-major reshaping then puts consecutive
    entries in the same tensor group.
    """
    devices = order_devices(devices if devices is not None else jax.devices())
    sizes = resolve_axis_sizes(cfg, len(devices))
    if model is not None:
        check_model_fits_mesh(model, sizes)
    if device_order is not None:
        if sorted(device_order) != list(range(len(devices))):
            raise HoloError(
                f"the device order must be a permutation of 0..{len(devices) - 1}; got {list(device_order)}."
            )
        devices = [devices[i] for i in device_order]
    grid = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
