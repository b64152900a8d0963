"""The topology model: hosts, GPUs, NICs, NVLink islands and the figures the cost model prices.

A `Topology` is a plain, frozen description. Its GPU list is in *device order*: position `i`
is the `i`-th device of `holo_jax.parallel.mesh.order_devices(jax.devices())` (process-major,
then local hardware id), which is the list a `MeshPlan.device_order` indexes. Each GPU keeps
its `index` as numbered in the input (`GPU3` in `nvidia-smi topo -m`, the NVML index), unique
within the topology; islands and the CLI speak in those indices.

NVLink islands are not stored: they are the connected components of the NV# links, derived
from `nvlinks` so a file can never hold islands that contradict its links.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any, Iterable

from holo_jax.errors import HoloError
from holo_jax.topology import serialize

# PCIe/SMP path classes of `nvidia-smi topo -m`, nearest first. SOC is what older drivers
# printed for today's SYS ("PCIe as well as the SMP link between CPU sockets (e.g. QPI)").
PATH_RANK: dict[str, int] = {"PIX": 1, "PXB": 2, "PHB": 3, "NODE": 4, "SYS": 5, "SOC": 5}

# No NVIDIA GPU so far has more than 18 NVLinks (H100 and B200 SXM). On NVSwitch systems
# `nvidia-smi` prints every pair as NV<links per GPU> (NV12 on DGX A100, NV18 on DGX H100),
# so a GPU whose pair counts add up to more than this must be reaching its peers through
# a switch: its links are shared by all peers rather than dedicated to each.
MAX_NVLINKS_PER_GPU = 18


@dataclasses.dataclass(frozen=True)
class Gpu:
    index: int  # as numbered in the input; unique within the topology
    host: int  # position in Topology.hosts
    pci_bus_id: str | None = None
    numa_node: int | None = None  # NUMA node of the CPUs with affinity to this GPU
    cpu_affinity: str | None = None  # e.g. "0-31,64-95"
    nearest_nic: str | None = None  # name of the NIC on the same host with the shortest PCIe path
    nic_path: str | None = None  # that path: PIX, PXB, PHB, NODE or SYS


@dataclasses.dataclass(frozen=True)
class Nic:
    name: str  # kernel device name, e.g. "mlx5_0"; unique per host
    host: int
    rate_gbit: float | None = None  # port rate in Gb/s, as sysfs and ibstatus report it
    state: str | None = None  # "ACTIVE", "DOWN", ...
    link_layer: str | None = None  # "InfiniBand" or "Ethernet" (RoCE)

    @property
    def usable(self) -> bool:
        """Unknown state counts as usable: a pasted matrix says nothing about link state."""
        return self.state is None or self.state.upper() == "ACTIVE"


@dataclasses.dataclass(frozen=True)
class Island:
    """GPUs of one host joined, directly or through others, by NVLink."""

    host: int
    gpus: tuple[int, ...]  # GPU indices, ascending
    links: tuple[tuple[int, int, int], ...]  # (gpu a, gpu b, NVLink count), a < b
    switched: bool  # links go to an NVSwitch fabric and are shared by all peers

    def links_per_gpu(self, gpu: int) -> int:
        """NVLinks this GPU can drive at once towards the island (1 for a CPU process's devices,
        which share host memory over one path each)."""
        counts = [n for a, b, n in self.links if gpu in (a, b)]
        if self.switched:
            return max(counts, default=1)
        return sum(counts)


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    kind: str  # e.g. "A100-SXM4-80GB", "cpu"
    memory_bytes: int | None = None  # per device; None: do not check memory
    # Dense (no sparsity) peak FLOP/s per compute dtype name ("bfloat16", "float32", ...).
    peak_flops: dict[str, float] = dataclasses.field(default_factory=dict)
    # Peak HBM bandwidth, GB/s; prices elementwise passes such as gradient encoding. None: unknown.
    memory_gbyte_s: float | None = None


@dataclasses.dataclass(frozen=True)
class LinkSpec:
    """Per-link-class figures for the alpha-beta model; the defaults are the cited figures of
    `holo_jax.topology.presets` (NVLink 2.0-4.0, NCCL's latencies), used for parsed matrices.

    Bandwidths are per GPU and per direction, as datasheets state them divided by two where
    they quote bidirectional totals; `*_efficiency` turns a peak into what a collective
    library achieves. Latencies are per ring step.
    """

    nvlink_gbyte_per_link: float = 25.0  # NVLink 2.0-4.0: 25 GB/s per link per direction
    nvlink_efficiency: float = 0.78
    pcie_gbyte: float = 32.0  # path between two GPUs of one host that is not NVLink
    pcie_efficiency: float = 0.44
    nic_efficiency: float = 0.96
    default_nic_gbit: float | None = None  # for NICs whose rate the input does not give
    nvlink_latency_s: float = 3.4e-6
    pcie_latency_s: float = 5.7e-6
    network_latency_s: float = 9.6e-6
    base_latency_s: float = 8.4e-6  # fixed cost of launching one collective


@dataclasses.dataclass(frozen=True)
class Topology:
    hosts: tuple[str, ...]
    gpus: tuple[Gpu, ...]  # device order (see module docstring)
    nics: tuple[Nic, ...] = ()
    nvlinks: tuple[tuple[int, int, int], ...] = ()  # (gpu index a, gpu index b, count), a < b
    device: DeviceSpec = DeviceSpec(kind="unknown")
    links: LinkSpec = LinkSpec()
    source: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    @functools.cached_property
    def position(self) -> dict[int, int]:
        """GPU index -> position in device order."""
        return {g.index: i for i, g in enumerate(self.gpus)}

    @functools.cached_property
    def islands(self) -> tuple[Island, ...]:
        return tuple(_islands(self))

    @functools.cached_property
    def island_of(self) -> dict[int, Island]:
        """GPU index -> its island."""
        return {g: isl for isl in self.islands for g in isl.gpus}

    def gpus_on(self, host: int) -> list[Gpu]:
        return [g for g in self.gpus if g.host == host]

    def nic(self, host: int, name: str) -> Nic:
        for n in self.nics:
            if n.host == host and n.name == name:
                return n
        raise KeyError((host, name))

    def nic_gbit(self, nic: Nic) -> float | None:
        return nic.rate_gbit if nic.rate_gbit is not None else self.links.default_nic_gbit

    # ---- files -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: Any, where: str = "topology") -> "Topology":
        return serialize.build(cls, data, where)

    @classmethod
    def load(cls, path: str | Path) -> "Topology":
        """Read a topology from JSON (or YAML, by extension) as written by `save`."""
        path = Path(path)
        text = serialize.read_text(path, "topology file")
        return cls.from_dict(serialize.parse_text(text, path), where=str(path))


def nearest_nics(
    gpus: Iterable[int], nics: list[str], path: dict[tuple[int, str], str]
) -> dict[int, tuple[str, str]]:
    """GPU index -> (nearest NIC, path class) from the `path[(gpu, nic)]` relation codes.

    Ties (two NICs behind the same PCIe switch, as on DGX A100) go to the NIC serving the
    fewest GPUs so far, so each GPU gets its own rail the way NCCL assigns them.
    """
    served = {n: 0 for n in nics}
    out: dict[int, tuple[str, str]] = {}
    for g in gpus:
        candidates = [(PATH_RANK[path[g, n]], served[n], i, n) for i, n in enumerate(nics) if (g, n) in path]
        if candidates:
            *_, best = min(candidates)
            served[best] += 1
            out[g] = (best, path[g, best])
    return out


def replicate(topology: Topology, hosts: int) -> Topology:
    """`hosts` copies of a single-host topology, GPU indices renumbered host-major.

    This is how a cluster of identical nodes is described from one node's `nvidia-smi topo -m`
    or a preset; NIC names repeat on every host because they are per-host kernel names.
    """
    if hosts < 1:
        raise HoloError(f"--hosts must be at least 1, got {hosts}.")
    if len(topology.hosts) != 1:
        raise HoloError(f"only a single-host topology can be replicated; this one has {len(topology.hosts)} hosts.")
    if hosts == 1:
        return topology
    per_host = len(topology.gpus)
    renumber = {g.index: i for i, g in enumerate(topology.gpus)}
    gpus, nics, nvlinks = [], [], []
    for h in range(hosts):
        gpus += [dataclasses.replace(g, index=h * per_host + renumber[g.index], host=h) for g in topology.gpus]
        nics += [dataclasses.replace(n, host=h) for n in topology.nics]
        nvlinks += [(h * per_host + renumber[a], h * per_host + renumber[b], c) for a, b, c in topology.nvlinks]
    return dataclasses.replace(
        topology,
        hosts=tuple(f"host{h}" for h in range(hosts)),
        gpus=tuple(gpus),
        nics=tuple(nics),
        nvlinks=tuple(nvlinks),
        source=f"{topology.source} x {hosts} hosts",
    )


def _islands(topo: Topology) -> Iterable[Island]:
    if topo.device.kind == "cpu":
        # CPU devices of one process exchange data through shared host memory, which plays
        # the role NVLink plays on GPUs: each process ("host") is one island.
        for h in range(len(topo.hosts)):
            yield Island(host=h, gpus=tuple(sorted(g.index for g in topo.gpus_on(h))), links=(), switched=True)
        return
    neighbours: dict[int, set[int]] = {g.index: set() for g in topo.gpus}
    for a, b, _ in topo.nvlinks:
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen: set[int] = set()
    for g in topo.gpus:
        if g.index in seen:
            continue
        component, frontier = {g.index}, [g.index]
        while frontier:
            for peer in neighbours[frontier.pop()] - component:
                component.add(peer)
                frontier.append(peer)
        seen |= component
        links = tuple(sorted(link for link in topo.nvlinks if link[0] in component))
        per_gpu_sum = {m: sum(n for a, b, n in links if m in (a, b)) for m in component}
        yield Island(
            host=g.host,
            gpus=tuple(sorted(component)),
            links=links,
            switched=max(per_gpu_sum.values()) > MAX_NVLINKS_PER_GPU,
        )


def _validate(topo: Topology) -> None:
    where = topo.source or "topology"
    if not topo.hosts:
        raise HoloError(f"{where}: the topology has no hosts.")
    if not topo.gpus:
        raise HoloError(f"{where}: the topology has no GPUs.")
    seen: dict[int, Gpu] = {}
    for g in topo.gpus:
        if g.index in seen:
            raise HoloError(f"{where}: GPU index {g.index} appears twice; every GPU needs its own index.")
        if not 0 <= g.host < len(topo.hosts):
            raise HoloError(f"{where}: GPU {g.index} names host {g.host}, but there are {len(topo.hosts)} hosts.")
        seen[g.index] = g
    nic_names = {(n.host, n.name) for n in topo.nics}
    if len(nic_names) != len(topo.nics):
        raise HoloError(f"{where}: a NIC name appears twice on one host.")
    for n in topo.nics:
        if not 0 <= n.host < len(topo.hosts):
            raise HoloError(f"{where}: NIC {n.name} names host {n.host}, but there are {len(topo.hosts)} hosts.")
        if n.rate_gbit is not None and not (math.isfinite(n.rate_gbit) and n.rate_gbit > 0):
            raise HoloError(f"{where}: NIC {n.name} has rate_gbit={n.rate_gbit}; give a positive rate in Gb/s "
                            f"(or null if it is unknown).")
    default = topo.links.default_nic_gbit
    if default is not None and not (math.isfinite(default) and default > 0):
        raise HoloError(f"{where}: links.default_nic_gbit={default}; give a positive rate in Gb/s.")
    for g in topo.gpus:
        if g.nearest_nic is not None and (g.host, g.nearest_nic) not in nic_names:
            raise HoloError(f"{where}: GPU {g.index}'s nearest NIC {g.nearest_nic} is not a NIC of host {g.host}.")
    pairs = set()
    for a, b, count in topo.nvlinks:
        if a not in seen or b not in seen:
            raise HoloError(f"{where}: NVLink ({a}, {b}) names a GPU that is not in the topology.")
        if a >= b or (a, b) in pairs:
            raise HoloError(f"{where}: NVLink ({a}, {b}) must be listed once with the smaller index first.")
        if seen[a].host != seen[b].host:
            raise HoloError(f"{where}: NVLink ({a}, {b}) joins GPUs on different hosts.")
        if count < 1:
            raise HoloError(f"{where}: NVLink ({a}, {b}) has {count} links; give a positive count.")
        pairs.add((a, b))
