"""The host layout as JAX and the job scheduler see it, and the topology of CPU-only machines.

`jax.devices()` gives each device's `process_index` and `local_hardware_id` (and `slice_index`
on platforms that have slices); the scheduler's environment (SLURM, Open MPI, Kubernetes) says
how many hosts the processes run on.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from holo_jax.topology.model import DeviceSpec, Gpu, LinkSpec, Nic, Topology


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    id: int
    platform: str  # "gpu", "cpu", ...
    kind: str  # device_kind, e.g. "NVIDIA A100-SXM4-80GB"
    process_index: int
    local_hardware_id: int | None
    slice_index: int | None  # absent on CPU and GPU backends


def device_order_key(d: Any) -> tuple:
    """Process-major, then local hardware id: the order of `holo_jax.parallel.mesh.order_devices`,
    which a `MeshPlan.device_order` indexes."""
    return (d.process_index, d.local_hardware_id if d.local_hardware_id is not None else 0, d.id)


def describe_devices(devices: Sequence[Any]) -> list[DeviceInfo]:
    """`jax.Device`s (or look-alikes) as plain records, in mesh device order."""
    return [
        DeviceInfo(
            id=d.id,
            platform=d.platform,
            kind=d.device_kind,
            process_index=d.process_index,
            local_hardware_id=getattr(d, "local_hardware_id", None),
            slice_index=getattr(d, "slice_index", None),
        )
        for d in sorted(devices, key=device_order_key)
    ]


@dataclasses.dataclass(frozen=True)
class Scheduler:
    name: str  # "slurm", "openmpi", "kubernetes" or "none"
    hosts: int | None = None
    processes: int | None = None
    processes_per_host: int | None = None
    host_index: int | None = None
    process_index: int | None = None


def scheduler(env: Mapping[str, str] | None = None) -> Scheduler:
    """What the launcher's environment variables say about the job's layout."""
    env = os.environ if env is None else env

    def num(name: str) -> int | None:
        # SLURM writes per-node counts like "8(x2)"; the leading number is the count.
        value = env.get(name, "").split("(")[0].split(",")[0]
        return int(value) if value.isdigit() else None

    if "SLURM_JOB_ID" in env:
        hosts = num("SLURM_JOB_NUM_NODES") or num("SLURM_NNODES")
        processes = num("SLURM_NTASKS") or num("SLURM_NPROCS")
        per_host = num("SLURM_NTASKS_PER_NODE") or (processes // hosts if processes and hosts else None)
        return Scheduler("slurm", hosts, processes, per_host, num("SLURM_NODEID"), num("SLURM_PROCID"))
    if "OMPI_COMM_WORLD_SIZE" in env:
        processes, per_host = num("OMPI_COMM_WORLD_SIZE"), num("OMPI_COMM_WORLD_LOCAL_SIZE")
        hosts = processes // per_host if processes and per_host else None
        return Scheduler("openmpi", hosts, processes, per_host, None, num("OMPI_COMM_WORLD_RANK"))
    if "KUBERNETES_SERVICE_HOST" in env:
        # A pod runs on one node; Indexed Jobs (and JobSet) number the pods.
        return Scheduler("kubernetes", host_index=num("JOB_COMPLETION_INDEX"), processes_per_host=1)
    return Scheduler("none")


# Nominal figures for CPU devices: they are not measured and only order the link classes
# (devices of one process share memory; processes talk over gloo on loopback), which is all
# the planner needs to keep tensor groups inside a process and the data axis across them.
CPU_LINKS = LinkSpec(
    nvlink_gbyte_per_link=10.0,
    nvlink_efficiency=1.0,
    pcie_gbyte=10.0,
    pcie_efficiency=1.0,
    nic_efficiency=1.0,
    default_nic_gbit=8.0,
    nvlink_latency_s=1e-6,
    pcie_latency_s=1e-6,
    network_latency_s=50e-6,
    base_latency_s=10e-6,
)


def cpu_topology(devices: Sequence[DeviceInfo]) -> Topology:
    """One "host" per process, its devices one island: the process is the granule on CPU."""
    processes = sorted({d.process_index for d in devices})
    host = {p: h for h, p in enumerate(processes)}
    return Topology(
        hosts=tuple(f"process{p}" for p in processes),
        gpus=tuple(Gpu(index=d.id, host=host[d.process_index]) for d in devices),
        nics=tuple(Nic(name="loopback", host=h) for h in range(len(processes))),
        device=DeviceSpec(kind="cpu"),
        links=CPU_LINKS,
        source=f"jax cpu devices ({len(devices)} on {len(processes)} process(es))",
    )
