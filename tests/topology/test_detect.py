"""Detection probes on fakes: a sysfs tree, an NVML module, scheduler environments, device lists."""
from __future__ import annotations

import dataclasses
import re
import types
from pathlib import Path

import jax
import pytest

from holo_jax.errors import HoloError
from holo_jax.parallel.mesh import order_devices
from holo_jax.topology import infiniband, nvml
from holo_jax.topology.detect import detect
from holo_jax.topology.jax_devices import describe_devices, device_order_key, scheduler
from holo_jax.topology.presets import _CUBE_MESH
from holo_jax.topology.probes import ProbeUnavailable

from tests.topology.test_nvidia_smi import A100, FIXTURES

IBSTATUS = FIXTURES / "01_a100-sxm4-8gpu-8nic-deepep.ibstatus.txt"


def fake_sysfs(root: Path, ports: dict[tuple[str, int], tuple[str, str, str]]) -> Path:
    for (device, port), (rate, state, layer) in ports.items():
        d = root / device / "ports" / str(port)
        d.mkdir(parents=True)
        (d / "rate").write_text(rate + "\n")
        (d / "state").write_text(state + "\n")
        (d / "link_layer").write_text(layer + "\n")
    return root


def ibstatus_ports() -> dict[tuple[str, int], tuple[str, str, str]]:
    """The fixture machine's `ibstatus`, which prints the sysfs files' text."""
    blocks = re.findall(r"device '(\S+)' port (\d+) status:(.*?)(?=Infiniband device|\Z)", IBSTATUS.read_text(), re.S)
    field = lambda text, name: re.search(rf"{name}:\s*(.+)", text).group(1).strip()  # noqa: E731
    return {(dev, int(port)): (field(b, "rate"), field(b, "state"), field(b, "link_layer")) for dev, port, b in blocks}


def test_sysfs_ports(tmp_path):
    ports = infiniband.read_ports(fake_sysfs(tmp_path, ibstatus_ports()))
    assert [(p.device, p.port) for p in ports] == [(f"mlx5_{i}", 1) for i in range(8)]
    assert {(p.rate_gbit, p.state, p.link_layer) for p in ports} == {(100.0, "ACTIVE", "Ethernet")}


def test_sysfs_adapters_add_active_ports(tmp_path):
    root = fake_sysfs(tmp_path, {
        ("mlx5_0", 1): ("200 Gb/sec (4X HDR)", "4: ACTIVE", "InfiniBand"),
        ("mlx5_1", 1): ("100 Gb/sec (4X EDR)", "4: ACTIVE", "Ethernet"),
        ("mlx5_1", 2): ("100 Gb/sec (4X EDR)", "4: ACTIVE", "Ethernet"),
        ("mlx5_2", 1): ("10 Gb/sec (4X SDR)", "1: DOWN", "InfiniBand"),
    })
    assert infiniband.adapters(infiniband.read_ports(root)) == {
        "mlx5_0": (200.0, "ACTIVE", "InfiniBand"),
        "mlx5_1": (200.0, "ACTIVE", "Ethernet"),
        "mlx5_2": (None, "DOWN", "InfiniBand"),
    }


def test_sysfs_absent_or_empty(tmp_path):
    with pytest.raises(ProbeUnavailable, match="does not exist"):
        infiniband.read_ports(tmp_path / "nope")
    with pytest.raises(ProbeUnavailable, match="lists no adapter ports"):
        infiniband.read_ports(tmp_path)


class FakeNvml(types.SimpleNamespace):
    """The slice of the pynvml API the probe uses, answering from a table of GPUs."""

    class NVMLError(Exception):
        pass

    NVML_NVLINK_MAX_LINKS = 18
    NVML_FEATURE_ENABLED = 1
    NVML_NVLINK_DEVICE_TYPE_SWITCH = 2

    def __init__(self, gpus: list[dict], fail_init: bool = False):
        super().__init__(gpus=gpus, fail_init=fail_init, shut_down=False)

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self):
        self.shut_down = True

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.gpus[i]

    def nvmlDeviceGetName(self, h):
        return h["name"].encode()  # older pynvml returns bytes

    def nvmlDeviceGetPciInfo(self, h):
        return types.SimpleNamespace(busId=h["bus"].encode())

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(total=80 * 2**30)

    def _link(self, h, link):
        if link >= len(h["links"]):
            raise self.NVMLError("Not Supported")
        return h["links"][link]

    def nvmlDeviceGetNvLinkState(self, h, link):
        return self.NVML_FEATURE_ENABLED if self._link(h, link) is not None else 0

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h, link):
        return types.SimpleNamespace(busId=self._link(h, link)[0].encode())

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h, link):
        kind = self._link(h, link)[1]
        if kind is None:
            raise self.NVMLError("Not Supported")
        return kind


def bus(i: int) -> str:
    return f"00000000:{0x10 + i:02X}:00.0"


def nvswitch_gpus(n=8, links=12) -> list[dict]:
    return [{"name": "NVIDIA A100-SXM4-80GB", "bus": bus(i),
             "links": [(f"00000000:{0xA0 + k:02X}:00.0", 2) for k in range(links)]} for i in range(n)]


def cube_mesh_gpus() -> list[dict]:
    peers = {i: [] for i in range(8)}
    for (a, b), n in _CUBE_MESH.items():
        peers[a] += [b] * n
        peers[b] += [a] * n
    # One link down and one unused port: neither may count. Remote device type unsupported (old driver).
    return [{"name": "Tesla V100-SXM2-32GB", "bus": bus(i),
             "links": [(bus(p), None) for p in peers[i]] + [None]} for i in range(8)]


def test_nvml_nvswitch_fabric():
    found = nvml.probe(FakeNvml(nvswitch_gpus()))
    assert [g.pci_bus_id for g in found] == [f"0000:{0x10 + i:02x}:00.0" for i in range(8)]
    assert found[0].name == "NVIDIA A100-SXM4-80GB" and all(p is None for p in found[0].peers)
    assert nvml.nvlinks(found) == [(a, b, 12) for a in range(8) for b in range(a + 1, 8)]


def test_nvml_direct_links():
    found = nvml.probe(FakeNvml(cube_mesh_gpus()))
    assert {(a, b): n for a, b, n in nvml.nvlinks(found)} == _CUBE_MESH


def test_nvml_unavailable():
    fake = FakeNvml([], fail_init=True)
    with pytest.raises(ProbeUnavailable, match="NVML did not start: Driver Not Loaded"):
        nvml.probe(fake)


def test_nvml_import_missing(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(ProbeUnavailable, match="nvidia-ml-py"):
        nvml.probe()


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "4", "SLURM_NTASKS": "32", "SLURM_NTASKS_PER_NODE": "8(x4)",
          "SLURM_NODEID": "2", "SLURM_PROCID": "17"}, ("slurm", 4, 32, 8, 2, 17)),
        ({"SLURM_JOB_ID": "7", "SLURM_NNODES": "2", "SLURM_NTASKS": "2"}, ("slurm", 2, 2, 1, None, None)),
        ({"OMPI_COMM_WORLD_SIZE": "16", "OMPI_COMM_WORLD_LOCAL_SIZE": "8", "OMPI_COMM_WORLD_RANK": "9"},
         ("openmpi", 2, 16, 8, None, 9)),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "3"}, ("kubernetes", None, None, 1, 3, None)),
        ({}, ("none", None, None, None, None, None)),
    ],
    ids=["slurm", "slurm-derived", "openmpi", "kubernetes", "none"],
)
def test_scheduler_env(env, expected):
    assert dataclasses.astuple(scheduler(env)) == expected


@dataclasses.dataclass
class FakeDevice:
    id: int
    process_index: int
    local_hardware_id: int
    platform: str = "gpu"
    device_kind: str = "NVIDIA A100-SXM4-80GB"


def gpu_devices(processes=1, per_process=8) -> list[FakeDevice]:
    devices = [FakeDevice(p * per_process + i, p, i) for p in range(processes) for i in range(per_process)]
    return devices[::-1]  # any order in, mesh order out


def test_device_order_matches_the_mesh_builder():
    real = jax.devices()
    assert [d.id for d in sorted(real, key=device_order_key)] == [d.id for d in order_devices(real)]
    assert [d.id for d in describe_devices(gpu_devices(2, 4))] == list(range(8))


def test_detect_a_gpu_host_from_every_probe(tmp_path):
    found = detect(
        devices=gpu_devices(),
        env={},
        nvml_module=FakeNvml(nvswitch_gpus()),
        sysfs_root=fake_sysfs(tmp_path, ibstatus_ports()),
        nvidia_smi_text=A100.read_text,
    )
    topo = found.topology
    assert {p.name: p.ok for p in found.probes} == {
        "jax.devices": True, "scheduler": False, "nvidia-smi": True, "nvml": True, "infiniband sysfs": True,
        "layout": True}
    assert [list(i.gpus) for i in topo.islands] == [list(range(8))]
    assert topo.gpus[3].pci_bus_id == "0000:13:00.0" and topo.gpus[3].nearest_nic == "mlx5_3"
    assert {(n.rate_gbit, n.state, n.link_layer) for n in topo.nics} == {(100.0, "ACTIVE", "Ethernet")}
    assert topo.device.memory_bytes == 80 * 2**30 and topo.device.peak_flops["bfloat16"] == 312e12


def test_detect_without_nvidia_smi_uses_nvml_links(tmp_path):
    def missing():
        raise ProbeUnavailable("nvidia-smi is not on PATH")

    found = detect(devices=gpu_devices(2, 8), env={"SLURM_JOB_ID": "1", "SLURM_NTASKS_PER_NODE": "1"},
                   nvml_module=FakeNvml(cube_mesh_gpus()), sysfs_root=tmp_path / "none", nvidia_smi_text=missing)
    probes = {p.name: p for p in found.probes}
    assert not probes["nvidia-smi"].ok and "not on PATH" in probes["nvidia-smi"].detail
    assert not probes["infiniband sysfs"].ok
    topo = found.topology
    assert topo.hosts == ("host0", "host1")
    assert {(a, b): n for a, b, n in topo.nvlinks if b < 8} == _CUBE_MESH


def test_detect_respects_cuda_visible_devices(tmp_path):
    found = detect(devices=gpu_devices(1, 2), env={"CUDA_VISIBLE_DEVICES": "3,0"},
                   nvml_module=FakeNvml(nvswitch_gpus()), sysfs_root=tmp_path, nvidia_smi_text=A100.read_text)
    topo = found.topology
    assert [g.index for g in topo.gpus] == [3, 0]  # CUDA ordinal 0 is GPU3
    assert [g.pci_bus_id for g in topo.gpus] == ["0000:13:00.0", "0000:10:00.0"]
    assert topo.nvlinks == ((0, 3, 12),)


def test_detect_one_process_per_gpu(tmp_path):
    # SLURM with 8 tasks per node, each task seeing only its own GPU.
    devices = [FakeDevice(p, p, 0) for p in range(16)]
    env = {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "16", "SLURM_NTASKS_PER_NODE": "8", "CUDA_VISIBLE_DEVICES": "5"}
    found = detect(devices=devices, env=env, nvml_module=FakeNvml(nvswitch_gpus()), sysfs_root=tmp_path,
                   nvidia_smi_text=A100.read_text)
    topo = found.topology
    assert topo.hosts == ("host0", "host1") and [g.host for g in topo.gpus] == [0] * 8 + [1] * 8
    assert [list(i.gpus) for i in topo.islands] == [list(range(8)), list(range(8, 16))]
    assert {p.name: p.detail for p in found.probes}["layout"] == "GPUs [0, 1, 2, 3, 4, 5, 6, 7] of each host, in PCI order"


def test_detect_without_gpus_gives_a_cpu_topology(require_devices):
    require_devices(8)
    found = detect(env={})
    topo = found.topology
    assert topo.device.kind == "cpu" and len(topo.gpus) == jax.device_count()
    assert [list(i.gpus) for i in topo.islands] == [list(range(jax.device_count()))]
    assert {p.name: p.ok for p in found.probes}["nvml"] is False


def test_cpu_topology_has_one_island_per_process():
    devices = [FakeDevice(i, i // 4, i % 4, platform="cpu", device_kind="cpu") for i in range(8)]
    topo = detect(devices=devices, env={}).topology
    assert topo.hosts == ("process0", "process1")
    assert [list(i.gpus) for i in topo.islands] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_undecodable_sysfs_attribute_is_one_sentence(tmp_path):
    root = fake_sysfs(tmp_path, ibstatus_ports())
    (root / "mlx5_3" / "ports" / "1" / "rate").write_bytes(b"100 Gb/sec \xff\xfe")
    with pytest.raises(HoloError, match=r"InfiniBand attribute file .*mlx5_3/ports/1/rate is not UTF-8 text") as err:
        infiniband.read_ports(root)
    assert "\n" not in str(err.value)
