"""Run set-up on the host: the run's mesh (planned or as configured), how the batch is laid out
over devices and processes, and moving batches and data positions between numpy and global arrays."""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from holo_jax.config import MeshConfig, ModelConfig, TrainConfig
from holo_jax.errors import HoloError
from holo_jax.parallel.mesh import build_mesh, order_devices
from holo_jax.parallel.rules import batch_sharding


def _sizes_left_at_defaults(cfg: MeshConfig) -> bool:
    default = MeshConfig()
    return (cfg.data, cfg.fsdp, cfg.tensor) == (default.data, default.fsdp, default.tensor)


def mesh_for_run(cfg: MeshConfig, model: ModelConfig, global_batch: int, microbatches: int = 1,
                 devices: Sequence[jax.Device] | None = None, grad_comm_scheme: str = "fp32"
                 ) -> tuple[jax.sharding.Mesh, dict | None]:
    """The run's mesh and, when the topology planner chose it, the plan (for the event log).

    `plan="auto"` with untouched sizes asks the planner: it detects the topology (NVML,
    `nvidia-smi topo -m`, sysfs InfiniBand, jax devices; CPU devices form one island per process)
    and picks the fastest feasible data x fsdp x tensor split and device order. It prices the
    data-axis gradient reduction under `grad_comm_scheme` (the run's `grad_comm.scheme`), the
    one that will run: the planner does not switch a run's scheme behind its back."""
    cfg.check()  # the section's declared choices and ranges (mesh.plan, axis sizes)
    devices = order_devices(devices if devices is not None else jax.devices())
    if cfg.plan == "manual" or not _sizes_left_at_defaults(cfg):
        return build_mesh(cfg, model, devices), None
    from holo_jax.topology import detect, plan  # topology probes are only needed here

    chosen = plan(detect().topology, model, global_batch, microbatches=microbatches, grad_comm=(grad_comm_scheme,))
    sizes = MeshConfig(**chosen.axis_sizes, plan="manual")
    return build_mesh(sizes, model, devices, chosen.device_order), chosen.to_dict()


def check_batch_layout(cfg: TrainConfig, dp: int) -> None:
    b, m = cfg.global_batch, cfg.microbatches
    if m < 1 or b % m:
        raise HoloError(f"global_batch={b} is not divisible by microbatches={m}; choose a divisor of {b}.")
    if (b // m) % dp:
        raise HoloError(
            f"each microbatch has {b // m} rows, which the {dp} data-parallel devices (data x fsdp) cannot "
            f"share evenly; make global_batch / microbatches a multiple of {dp}."
        )


def process_rows(sharding: jax.sharding.Sharding, global_rows: int, seq_len: int) -> tuple[int, int]:
    """This process's contiguous share of the batch rows as (shard index, shard count).

    Rows are laid out by the batch sharding; when the batch is replicated across processes
    (e.g. a tensor axis spanning hosts) several processes share the same rows."""
    slices = [idx[0] for idx in sharding.addressable_devices_indices_map((global_rows, seq_len)).values()]
    start = min(s.start or 0 for s in slices)
    stop = max(global_rows if s.stop is None else s.stop for s in slices)
    rows = stop - start
    if global_rows % rows or start % rows:
        raise HoloError(
            f"this process holds batch rows {start}..{stop}, which is not an even share of {global_rows}; "
            "use a mesh whose data-parallel axes are laid out by process."
        )
    return start // rows, global_rows // rows


def to_global(local: dict[str, np.ndarray], mesh: jax.sharding.Mesh, global_rows: int) -> dict[str, jax.Array]:
    """This process's rows of each field -> global arrays sharded by rows over the batch axes."""
    return {
        k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v, (global_rows, *v.shape[1:]))
        for k, v in local.items()
    }


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a row-sharded global array, in row order."""
    shards = {}
    for s in x.addressable_shards:
        shards.setdefault(s.index[0].start or 0, np.asarray(s.data))
    return np.concatenate([shards[k] for k in sorted(shards)], axis=0)
