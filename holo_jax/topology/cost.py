"""Alpha-beta cost model of NCCL-style collectives over a `Topology`.

A collective over a group of devices costs a fixed launch latency, a per-step latency for each
ring step (intra-host steps at NVLink or PCIe latency, host-crossing steps at network latency),
and its bytes over the group's bottleneck *bus bandwidth* B, as nccl-tests defines it
(NVIDIA/nccl-tests doc/PERFORMANCE.md): an all-reduce of S bytes over n ranks moves
2(n-1)/n * S through every rank's link, a reduce-scatter or all-gather (n-1)/n * S.

B for a group is the slowest of:
- inside one host: NVLink when the group's GPUs form a ring over NVLink within one island
  (links per GPU x per-link bandwidth, counting only links to group members unless an NVSwitch
  shares them), otherwise the PCIe path;
- across hosts: the NIC bandwidth behind the group's GPUs on each host. NCCL runs one ring
  channel per NIC and every channel crosses each host boundary once, so a group with k GPUs per
  host gets the sum of those k GPUs' NIC shares: on a DGX A100 an all-GPU all-reduce reaches
  ~192 GB/s bus bandwidth (8 x 24 GB/s), a group with one GPU per host 24 GB/s.
NIC shares assume every GPU of a host communicates at once, which is what a collective along a
mesh axis does (all groups of that axis run together).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Sequence

import numpy as np

from holo_jax.errors import HoloError
from holo_jax.topology.model import Topology


@dataclasses.dataclass(frozen=True)
class GroupLink:
    kind: str  # "network" if the group spans hosts, else its intra-host class: "nvlink" or "pcie"
    ranks: int
    hosts: int
    ranks_per_host: int
    bus_gbyte: float  # achievable bus bandwidth per rank, GB/s
    intra_latency_s: float  # per ring step inside a host
    inter_latency_s: float  # per ring step that crosses hosts
    base_latency_s: float
    # The two link classes apart (GB/s, inf where the group has none): NVLink/PCIe ring bandwidth
    # inside a host, and the NIC bandwidth behind the group's members on its worst host. An
    # all-to-all uses both at once, a ring is bound by the slower (`bus_gbyte`).
    intra_gbyte: float = math.inf
    inter_gbyte: float = math.inf


def ring_all_reduce_s(nbytes: float, g: GroupLink) -> float:
    n, h = g.ranks, g.hosts
    steps = 2 * (n - h) * g.intra_latency_s + 2 * (h - 1) * g.inter_latency_s
    return g.base_latency_s + steps + 2 * (n - 1) / n * nbytes / (g.bus_gbyte * 1e9)


# NCCL's tuning model credits trees with 90% of the ring's bus bandwidth (tuning.cc, `busBw*.9`).
TREE_BANDWIDTH = 0.9


def tree_all_reduce_s(nbytes: float, g: GroupLink) -> float:
    """NCCL's double binary tree across hosts (a chain inside each): log-depth latency, and
    every rank sends and receives the whole buffer once per phase (reduce, then broadcast)."""
    depth = (g.ranks_per_host - 1) * g.intra_latency_s + math.ceil(math.log2(g.hosts)) * g.inter_latency_s
    return g.base_latency_s + 2 * depth + 2 * nbytes / (TREE_BANDWIDTH * g.bus_gbyte * 1e9)


def all_reduce_s(nbytes: float, g: GroupLink) -> float:
    """The faster of ring and tree, as NCCL's tuner picks per message size."""
    if g.ranks == 1 or nbytes <= 0:
        return 0.0
    return min(ring_all_reduce_s(nbytes, g), tree_all_reduce_s(nbytes, g))


def reduce_scatter_s(nbytes: float, g: GroupLink) -> float:
    """Ring reduce-scatter of an `nbytes` buffer (the unsharded size); all-gather costs the same."""
    if g.ranks == 1 or nbytes <= 0:
        return 0.0
    n, h = g.ranks, g.hosts
    steps = (n - h) * g.intra_latency_s + (h - 1) * g.inter_latency_s
    return g.base_latency_s + steps + (n - 1) / n * nbytes / (g.bus_gbyte * 1e9)


all_gather_s = reduce_scatter_s


def two_phase_s(encoded_bytes: float, g: GroupLink) -> float:
    """holo_jax's two-phase all-reduce (holo_jax.parallel.collectives.two_phase_pmean) of a vector
    that is `encoded_bytes` on the wire: an all-to-all of encoded chunks, then an all-gather of
    the re-encoded reduced chunks. Each phase every rank sends (n-1)/n of the encoded vector: the
    part for ranks on other hosts through its NIC share, the part for its own host's ranks over
    NVLink/PCIe at the same time. With one rank per host this is exactly a reduce-scatter plus an
    all-gather of the encoded size; with k ranks per host every host pushes k times the bytes of
    a hierarchical ring through its NICs, because the exchange is flat, not hierarchical."""
    if g.ranks == 1 or encoded_bytes <= 0:
        return 0.0
    n, h, k = g.ranks, g.hosts, g.ranks_per_host
    remote, local = (n - k) / n * encoded_bytes, (k - 1) / n * encoded_bytes
    network = remote / (g.inter_gbyte / k * 1e9) if remote else 0.0
    inside = local / (g.intra_gbyte * 1e9) if local else 0.0
    steps = (n - h) * g.intra_latency_s + (h - 1) * g.inter_latency_s
    return 2 * (g.base_latency_s + steps + max(network, inside))


class LinkModel:
    """Answers "what link does this group of device positions communicate over?" for a topology."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.links = topology.links
        gpus = topology.gpus
        self.host_of = np.array([g.host for g in gpus])
        by_host: dict[int, list[int]] = {}
        for pos, g in enumerate(gpus):
            by_host.setdefault(g.host, []).append(pos)
        self.host_positions = [by_host.get(h, []) for h in range(len(topology.hosts))]
        self.slot_of = np.zeros(len(gpus), dtype=np.int64)
        for positions in self.host_positions:
            self.slot_of[positions] = np.arange(len(positions))
        self.nic_share = np.array([self._nic_share(pos) for pos in range(len(gpus))])
        if len(topology.hosts) > 1:
            for h, positions in enumerate(self.host_positions):
                if positions and not self.nic_share[positions].all():
                    raise HoloError(
                        f"{topology.source}: host {topology.hosts[h]} has GPUs without a NIC of known rate, so "
                        f"traffic between hosts cannot be priced; give the NICs' rate_gbit (or links.default_nic_gbit)."
                    )
        self._host_sig = self._host_signatures()
        self._cache: dict[tuple, GroupLink] = {}

    # ---- per GPU ----------------------------------------------------------------------

    def _nic_share(self, pos: int) -> float:
        """GB/s of NIC bandwidth this GPU gets when all GPUs of its host send at once."""
        topo, gpu = self.topology, self.topology.gpus[pos]
        host_gpus = topo.gpus_on(gpu.host)
        usable = [n for n in topo.nics if n.host == gpu.host and n.usable and topo.nic_gbit(n)]
        eff = self.links.nic_efficiency
        if gpu.nearest_nic is not None and any(n.name == gpu.nearest_nic for n in usable):
            sharing = sum(1 for g in host_gpus if g.nearest_nic == gpu.nearest_nic)
            return topo.nic_gbit(topo.nic(gpu.host, gpu.nearest_nic)) / 8 * eff / sharing
        return sum(topo.nic_gbit(n) for n in usable) / 8 * eff / len(host_gpus)

    def _host_signatures(self) -> np.ndarray:
        """Small ints equal for hosts whose GPUs, islands and NICs are alike slot for slot."""
        topo, seen, sigs = self.topology, {}, []
        for positions in self.host_positions:
            slot = {topo.gpus[p].index: s for s, p in enumerate(positions)}
            links = tuple(sorted((slot[a], slot[b], c) for a, b, c in topo.nvlinks if a in slot))
            switched = tuple(topo.island_of[topo.gpus[p].index].switched for p in positions)
            sig = (links, switched, tuple(self.nic_share[positions].round(6)))
            sigs.append(seen.setdefault(sig, len(seen)))
        return np.array(sigs)

    # ---- per group --------------------------------------------------------------------

    def group_keys(self, groups: np.ndarray) -> list[tuple]:
        """One hashable key per row of `groups` (device positions), equal for groups whose
        members sit on alike hosts in the same slots, so alike groups are priced once."""
        hosts = self.host_of[groups]
        slots = self.slot_of[groups]
        same_host = hosts[:, :, None] == hosts[:, None, :]
        masks = (same_host * (1 << slots)[:, None, :]).sum(axis=2)  # each member's host's slot set
        codes = np.sort(self._host_sig[hosts] * (1 << 32) + masks, axis=1)
        return [tuple(row) for row in codes.tolist()]

    def group(self, positions: Sequence[int], key: tuple | None = None) -> GroupLink:
        if key is not None and key in self._cache:
            return self._cache[key]
        by_host: dict[int, list[int]] = {}
        for p in positions:
            by_host.setdefault(int(self.host_of[p]), []).append(int(p))
        lk = self.links
        intra_bus, intra_kind, intra_latency = math.inf, "nvlink", 0.0
        for members in by_host.values():
            if len(members) == 1:
                continue
            nvlink = self._nvlink_gbyte(members)
            if nvlink is None:
                intra_kind, intra_latency = "pcie", max(intra_latency, lk.pcie_latency_s)
                intra_bus = min(intra_bus, lk.pcie_gbyte * lk.pcie_efficiency)
            else:
                intra_latency = max(intra_latency, lk.nvlink_latency_s)
                intra_bus = min(intra_bus, nvlink)
        inter_bus = min(float(self.nic_share[m].sum()) for m in by_host.values()) if len(by_host) > 1 else math.inf
        link = GroupLink(
            kind="network" if len(by_host) > 1 else intra_kind,
            ranks=len(positions),
            hosts=len(by_host),
            ranks_per_host=max(len(m) for m in by_host.values()),
            bus_gbyte=min(intra_bus, inter_bus),
            intra_latency_s=intra_latency,
            inter_latency_s=lk.network_latency_s,
            base_latency_s=lk.base_latency_s,
            intra_gbyte=intra_bus,
            inter_gbyte=inter_bus,
        )
        if key is not None:
            self._cache[key] = link
        return link

    def _nvlink_gbyte(self, members: list[int]) -> float | None:
        """NVLink bus bandwidth of a ring over these same-host GPUs, or None if they cannot form one."""
        topo = self.topology
        index = [topo.gpus[p].index for p in members]
        islands = {id(topo.island_of[i]) for i in index}
        if len(islands) != 1:
            return None
        island = topo.island_of[index[0]]
        if island.switched:
            links = min(island.links_per_gpu(i) for i in index)
        else:
            count = {(a, b): c for a, b, c in island.links}
            count.update({(b, a): c for (a, b), c in list(count.items())})
            if not _has_ring(index, count):
                return None
            links = min(sum(count.get((i, j), 0) for j in index if j != i) for i in index)
        return links * self.links.nvlink_gbyte_per_link * self.links.nvlink_efficiency


def _has_ring(members: list[int], count: dict[tuple[int, int], int]) -> bool:
    """A Hamiltonian cycle over NVLink exists (an edge, for two GPUs). Direct-attached (switchless)
    islands have at most 8 GPUs in shipped systems, so trying the orders is cheap; beyond that a
    connected island is taken to be ringable rather than searched."""
    if len(members) == 2:
        return (members[0], members[1]) in count
    if len(members) > 8:
        return True  # an approximation: larger switchless groups are assumed ringable, not searched
    first, *rest = members
    return any(
        all((a, b) in count for a, b in zip((first, *order), (*order, first)))
        for order in itertools.permutations(rest)
    )
