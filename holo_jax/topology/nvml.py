"""Probe GPUs and their NVLinks through NVML (the `nvidia-ml-py` package, imported as `pynvml`).

Per GPU: PCI bus id, name, memory, and for every NVLink that is up the PCI bus id of the device
at its far end. A link whose far end is another GPU of this host is a direct link (DGX-1,
NVLink bridges); one whose far end is an NVSwitch (`NVML_NVLINK_DEVICE_TYPE_SWITCH`, or a PCI
id that is no GPU's) joins the GPU to a switched fabric shared with every other such GPU.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from holo_jax.topology.probes import ProbeUnavailable


@dataclasses.dataclass(frozen=True)
class NvmlGpu:
    index: int  # NVML index (PCI bus order)
    name: str
    pci_bus_id: str  # normalised, see `normalise_bus_id`
    memory_bytes: int
    peers: tuple[str | None, ...]  # per active NVLink: far-end bus id; None for a switch


def normalise_bus_id(bus_id: str | bytes) -> str:
    """"00000000:07:00.0" (NVML) and "0000:07:00.0" (sysfs) -> "0000:07:00.0"."""
    text = bus_id.decode() if isinstance(bus_id, bytes) else bus_id
    domain, rest = text.strip().lower().split(":", 1)
    return f"{int(domain, 16):04x}:{rest}"


def probe(nvml: Any = None) -> list[NvmlGpu]:
    """All GPUs NVML sees; ProbeUnavailable with NVML's reason if it cannot start."""
    if nvml is None:
        try:
            import pynvml as nvml  # nvidia-ml-py
        except ImportError:
            raise ProbeUnavailable("nvidia-ml-py (pynvml) is not installed") from None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:  # no driver, no libnvidia-ml.so, no permission
        raise ProbeUnavailable(f"NVML did not start: {e}") from None
    try:
        return [_gpu(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
    except nvml.NVMLError as e:
        raise ProbeUnavailable(f"NVML query failed: {e}") from None
    finally:
        nvml.nvmlShutdown()


def _gpu(nvml: Any, index: int) -> NvmlGpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = nvml.nvmlDeviceGetName(handle)
    peers = []
    for link in range(nvml.NVML_NVLINK_MAX_LINKS):
        try:
            if nvml.nvmlDeviceGetNvLinkState(handle, link) != nvml.NVML_FEATURE_ENABLED:
                continue
            remote = normalise_bus_id(nvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId)
        except nvml.NVMLError:
            # NOT_SUPPORTED past the GPU's last link, and on GPUs without NVLink at all.
            continue
        try:
            to_switch = nvml.nvmlDeviceGetNvLinkRemoteDeviceType(handle, link) == nvml.NVML_NVLINK_DEVICE_TYPE_SWITCH
        except nvml.NVMLError:
            to_switch = False  # older drivers: decided later by whether the bus id is a GPU's
        peers.append(None if to_switch else remote)
    return NvmlGpu(
        index=index,
        name=name.decode() if isinstance(name, bytes) else name,
        pci_bus_id=normalise_bus_id(nvml.nvmlDeviceGetPciInfo(handle).busId),
        memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
        peers=tuple(peers),
    )


def nvlinks(gpus: list[NvmlGpu]) -> list[tuple[int, int, int]]:
    """(index a, index b, links) pairs in the form `nvidia-smi topo -m` reports them.

    GPUs on a switched fabric are reported pairwise with their per-GPU switch link count, which
    is what nvidia-smi prints (NV12 between every pair of a DGX A100) and what
    `model.Island` interprets as shared switch links.
    """
    by_bus = {g.pci_bus_id: g.index for g in gpus}
    direct: dict[tuple[int, int], int] = {}
    switch_links: dict[int, int] = {}
    for g in gpus:
        for peer in g.peers:
            if peer in by_bus and by_bus[peer] != g.index:
                if g.index < by_bus[peer]:
                    key = (g.index, by_bus[peer])
                    direct[key] = direct.get(key, 0) + 1
            else:
                switch_links[g.index] = switch_links.get(g.index, 0) + 1
    switched = sorted(switch_links)
    for i, a in enumerate(switched):
        for b in switched[i + 1:]:
            direct[a, b] = direct.get((a, b), 0) + min(switch_links[a], switch_links[b])
    return sorted((a, b, n) for (a, b), n in direct.items())
