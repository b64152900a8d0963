"""`detect()`: this job's topology from every probe that works here, and why the others did not.

On GPUs one host is probed (`nvidia-smi topo -m` for PCIe paths and NICs, NVML for bus ids,
NVLinks, name and memory, sysfs for NIC rate and state) and assumed to be what every host of
the job looks like; `jax.devices()` and the scheduler say how many hosts there are. Without
GPUs the topology is the CPU devices, one island per process, so planning still works.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from holo_jax.errors import HoloError
from holo_jax.topology import infiniband, jax_devices, nvidia_smi, nvml, presets
from holo_jax.topology.model import DeviceSpec, Gpu, Nic, Topology, replicate
from holo_jax.topology.probes import Probe, ProbeUnavailable


@dataclasses.dataclass(frozen=True)
class Detection:
    topology: Topology
    probes: tuple[Probe, ...]


def run_nvidia_smi() -> str:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise ProbeUnavailable("nvidia-smi is not on PATH")
    try:
        done = subprocess.run([exe, "topo", "-m"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ProbeUnavailable(f"`nvidia-smi topo -m` did not run: {e}") from None
    if done.returncode:
        raise ProbeUnavailable(f"`nvidia-smi topo -m` failed: {(done.stderr or done.stdout).strip()[:200]}")
    return done.stdout


def detect(
    *,
    devices: Sequence[Any] | None = None,
    env: Mapping[str, str] | None = None,
    nvml_module: Any = None,
    sysfs_root: Path = infiniband.SYSFS_ROOT,
    nvidia_smi_text: Callable[[], str] = run_nvidia_smi,
) -> Detection:
    """Probe this machine (the keyword arguments replace real probes in tests)."""
    if devices is None:
        import jax

        devices = jax.devices()
    env = os.environ if env is None else env
    devs = jax_devices.describe_devices(devices)
    processes = sorted({d.process_index for d in devs})
    slices = {d.slice_index for d in devs}
    probes = [Probe("jax.devices", True, f"{len(devs)} {devs[0].platform} device(s) on {len(processes)} process(es), "
                    f"slice_index {'absent' if slices == {None} else sorted(slices)}")]
    sched = jax_devices.scheduler(env)
    probes.append(Probe("scheduler", sched.name != "none", _describe_scheduler(sched)))
    if devs[0].platform != "gpu":
        skipped = f"skipped: JAX sees {devs[0].platform} devices, no GPUs"
        probes += [Probe(name, False, skipped) for name in ("nvidia-smi", "nvml", "infiniband sysfs")]
        return Detection(jax_devices.cpu_topology(devs), tuple(probes))

    host, host_probes = _probe_host(nvidia_smi_text, nvml_module, sysfs_root, devs[0].kind)
    probes += host_probes
    per_host = sched.processes_per_host or 1  # JAX on GPUs runs one process per host by default
    if len(processes) % per_host:
        raise HoloError(f"{len(processes)} JAX processes do not split into hosts of {per_host} process(es) each.")
    hosts = len(processes) // per_host
    if len(devs) % hosts:
        raise HoloError(f"JAX sees {len(devs)} GPUs on {hosts} hosts, not the same number per host; "
                        f"describe the cluster in a topology file instead (--topology FILE).")
    host = _visible(host, len(devs) // hosts, env, probes)
    return Detection(replicate(host, hosts), tuple(probes))


def _probe_host(
    smi: Callable[[], str], nvml_module: Any, sysfs_root: Path, jax_kind: str
) -> tuple[Topology | None, list[Probe]]:
    probes: list[Probe] = []
    host: Topology | None = None
    try:
        host = nvidia_smi.parse(smi(), source="nvidia-smi topo -m")
        probes.append(Probe("nvidia-smi", True, f"{len(host.gpus)} GPUs, {len(host.nics)} NICs, "
                            f"{len(host.islands)} NVLink island(s)"))
    except (ProbeUnavailable, HoloError) as e:
        probes.append(Probe("nvidia-smi", False, str(e)))
    try:
        found = nvml.probe(nvml_module)
        probes.append(Probe("nvml", True, f"{len(found)} GPUs ({found[0].name if found else 'none'}), "
                            f"{sum(len(g.peers) for g in found)} active NVLinks"))
    except ProbeUnavailable as e:
        found = []
        probes.append(Probe("nvml", False, str(e)))
    if host is None and found:
        host = Topology(hosts=("localhost",), gpus=tuple(Gpu(index=g.index, host=0) for g in found),
                        nvlinks=tuple(nvml.nvlinks(found)), source="nvml")
    if found:
        bus = {g.index: g.pci_bus_id for g in found}
        kind = found[0].name
        device = DeviceSpec(kind, found[0].memory_bytes, presets.peak_flops(kind))
        host = dataclasses.replace(
            host, gpus=tuple(dataclasses.replace(g, pci_bus_id=bus.get(g.index)) for g in host.gpus), device=device)
    try:
        ports = infiniband.read_ports(sysfs_root)
        probes.append(Probe("infiniband sysfs", True, ", ".join(
            f"{p.device}/{p.port} {p.rate_gbit or '?'} Gb/s {p.state} {p.link_layer}" for p in ports)))
        if host is not None:
            host = _merge_nics(host, infiniband.adapters(ports))
    except ProbeUnavailable as e:
        probes.append(Probe("infiniband sysfs", False, str(e)))
    if host is not None and host.device.kind == "unknown GPU":
        host = dataclasses.replace(host, device=DeviceSpec(jax_kind, None, presets.peak_flops(jax_kind)))
    return host, probes


def _merge_nics(host: Topology, adapters: dict[str, tuple[float | None, str | None, str | None]]) -> Topology:
    known = {n.name for n in host.nics}
    nics = [dataclasses.replace(n, **dict(zip(("rate_gbit", "state", "link_layer"), adapters[n.name])))
            if n.name in adapters else n for n in host.nics]
    nics += [Nic(name, 0, *adapters[name]) for name in adapters if name not in known]
    return dataclasses.replace(host, nics=tuple(nics))


def _visible(host: Topology | None, per_host: int, env: Mapping[str, str], probes: list[Probe]) -> Topology:
    """The host's GPUs in the order JAX numbers them (`local_hardware_id`), `per_host` of them.

    CUDA numbers the GPUs listed in CUDA_VISIBLE_DEVICES in the listed order, otherwise in PCI
    order, which is NVML's and nvidia-smi's order on servers of identical GPUs. When several
    processes share a host (one GPU each, say), their devices are taken in local-rank order.
    """
    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    listed = [int(v) for v in visible.split(",")] if visible and all(
        v.strip().isdigit() for v in visible.split(",")) else []
    if host is not None:
        if len(listed) == per_host and all(i in host.position for i in listed):
            probes.append(Probe("layout", True, f"GPUs {listed} of each host, from CUDA_VISIBLE_DEVICES"))
            return _restrict(host, listed)
        if len(host.gpus) >= per_host:
            first = [g.index for g in host.gpus][:per_host]
            probes.append(Probe("layout", True, f"GPUs {first} of each host, in PCI order"))
            return _restrict(host, first)
        probes.append(Probe("layout", False, f"JAX uses {per_host} GPUs per host but the probes found only "
                            f"{len(host.gpus)}; NVLinks and NICs are ignored"))
    return Topology(hosts=("localhost",), gpus=tuple(Gpu(index=i, host=0) for i in range(per_host)),
                    device=host.device if host else DeviceSpec("unknown GPU"), source="jax gpu devices")


def _restrict(host: Topology, indices: list[int]) -> Topology:
    keep = set(indices)
    return dataclasses.replace(
        host,
        gpus=tuple(host.gpus[host.position[i]] for i in indices),
        nvlinks=tuple(link for link in host.nvlinks if link[0] in keep and link[1] in keep),
    )


def _describe_scheduler(s: jax_devices.Scheduler) -> str:
    if s.name == "none":
        return "no SLURM, Open MPI or Kubernetes environment"
    fields = ("hosts", "processes", "processes_per_host", "host_index", "process_index")
    return s.name + ": " + ", ".join(f"{f}={getattr(s, f)}" for f in fields if getattr(s, f) is not None)
