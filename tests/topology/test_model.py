"""Topology model: islands, files, replication and the presets."""
from __future__ import annotations

import json

import pytest

from holo_jax.errors import HoloError
from holo_jax.topology.model import Gpu, Nic, Topology, nearest_nics, replicate
from holo_jax.topology.nvidia_smi import parse_file
from holo_jax.topology.presets import PRESETS, peak_flops, preset

from tests.topology.test_nvidia_smi import DGX1


def two_hosts_two_islands() -> Topology:
    """2 hosts x 4 GPUs, NVLink pairs (0,1) and (2,3) on each host, one 100 Gb/s NIC per pair."""
    return replicate(Topology(
        hosts=("h",),
        gpus=tuple(Gpu(index=i, host=0, nearest_nic=f"mlx5_{i // 2}", nic_path="PIX") for i in range(4)),
        nics=(Nic("mlx5_0", 0, 100.0, "ACTIVE", "InfiniBand"), Nic("mlx5_1", 0, 100.0, "ACTIVE", "InfiniBand")),
        nvlinks=((0, 1, 4), (2, 3, 4)),
        source="test",
    ), 2)


def test_json_round_trip(tmp_path):
    topo = two_hosts_two_islands()
    topo.save(tmp_path / "t.json")
    loaded = Topology.load(tmp_path / "t.json")
    assert loaded == topo
    assert [list(i.gpus) for i in loaded.islands] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [i.host for i in loaded.islands] == [0, 0, 1, 1]


def test_yaml_file(tmp_path):
    yaml = pytest.importorskip("yaml")
    topo = preset("dgx1-v100")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(topo.to_dict()))))
    assert Topology.load(tmp_path / "t.yaml") == topo


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["gpus"][0].update(host="0"), "t.json.gpus[0].host must be an integer"),
        (lambda d: d["gpus"][0].update(colour="red"), "t.json.gpus[0] has unknown field `colour`"),
        (lambda d: d["gpus"][0].pop("index"), "t.json.gpus[0] is missing the field `index`"),
        (lambda d: d.update(nvlinks=[[0, 1]]), "t.json.nvlinks[0] must be a list of 3 values"),
        (lambda d: d.update(nvlinks=[[1, 0, 4]]), "NVLink (1, 0) must be listed once with the smaller index first"),
        (lambda d: d.update(nvlinks=[[1, 4, 4]]), "NVLink (1, 4) joins GPUs on different hosts"),
        (lambda d: d["gpus"][1].update(index=0), "GPU index 0 appears twice"),
        (lambda d: d["gpus"][0].update(host=5), "GPU 0 names host 5, but there are 2 hosts"),
        (lambda d: d["gpus"][0].update(nearest_nic="mlx5_9"), "GPU 0's nearest NIC mlx5_9 is not a NIC of host 0"),
        (lambda d: d.update(links={"nvlink_gbyte_per_link": "fast"}), "t.json.links.nvlink_gbyte_per_link must be"),
    ],
)
def test_bad_files_name_the_field(tmp_path, edit, message):
    data = two_hosts_two_islands().to_dict()
    edit(data)
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(HoloError) as err:
        Topology.load(tmp_path / "t.json")
    assert message in str(err.value)


def test_unreadable_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(HoloError, match="bad.json is not valid JSON: .* line 1"):
        Topology.load(tmp_path / "bad.json")
    with pytest.raises(HoloError, match="cannot read topology file"):
        Topology.load(tmp_path / "missing.json")


def test_replicate_renumbers_host_major():
    topo = replicate(parse_file(DGX1), 3)
    assert topo.hosts == ("host0", "host1", "host2")
    assert [g.index for g in topo.gpus] == list(range(24))
    assert [g.host for g in topo.gpus] == [h for h in range(3) for _ in range(8)]
    assert [list(i.gpus) for i in topo.islands] == [list(range(8 * h, 8 * h + 8)) for h in range(3)]
    assert {(n.host, n.name) for n in topo.nics} == {(h, "mlx5_0") for h in range(3)}
    with pytest.raises(HoloError, match="only a single-host topology can be replicated"):
        replicate(topo, 2)
    with pytest.raises(HoloError, match="--hosts must be at least 1"):
        replicate(parse_file(DGX1), 0)


def test_nearest_nic_ties_spread_over_rails():
    paths = {(g, n): "PXB" for g in (0, 1) for n in ("a", "b")} | {(2, "a"): "SYS", (2, "b"): "NODE"}
    assert nearest_nics([0, 1, 2], ["a", "b"], paths) == {0: ("a", "PXB"), 1: ("b", "PXB"), 2: ("b", "NODE")}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_complete(name):
    topo = preset(name)
    assert len(topo.gpus) == 8 and topo.device.memory_bytes and topo.device.peak_flops
    assert all(g.nearest_nic is not None for g in topo.gpus)
    assert all(n.rate_gbit and n.state == "ACTIVE" for n in topo.nics)


def test_preset_islands():
    assert preset("dgx-a100").islands[0].switched and preset("dgx-a100").islands[0].links_per_gpu(0) == 12
    assert preset("dgx-h100").islands[0].links_per_gpu(5) == 18
    assert [list(i.gpus) for i in preset("pcie-8gpu").islands] == [[i] for i in range(8)]
    # The DGX-1 preset's cube mesh is exactly the one a real DGX-1 reports.
    assert preset("dgx1-v100").nvlinks == parse_file(DGX1).nvlinks


def test_unknown_preset_and_peaks():
    with pytest.raises(HoloError, match="unknown topology preset `dgx-9`; choose one of: dgx-a100"):
        preset("dgx-9")
    assert peak_flops("NVIDIA H100 PCIe")["bfloat16"] == 756e12  # not the SXM figure
    assert peak_flops("NVIDIA H100 80GB HBM3")["bfloat16"] == 989e12
    assert peak_flops("Tesla T4") == {}
