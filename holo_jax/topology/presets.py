"""Named single-host topologies of common GPU servers, with every figure's source.

`--hosts N` (`model.replicate`) turns one into a cluster of identical nodes. Bandwidths are per
GPU and per direction. "Peak" figures come from NVIDIA datasheets; efficiencies (what NCCL
achieves of a peak) come from published measurements or NCCL's own tuning model:

- NVLink efficiency 0.78: NCCL's tuning model caps A100 (sm80) all-reduce bus bandwidth at
  235 GB/s of the 300 GB/s peak (NVIDIA/nccl src/graph/tuning.cc, the `compCap80` cap).
- NIC efficiency 0.96: NVIDIA measured 192 GB/s over the eight 200 Gb/s HDR adapters of a
  DGX A100 on Selene, 24 of 25 GB/s per adapter ("Accelerating IO in the Modern Data Center:
  Network IO", NVIDIA developer blog, Oct 2020).
- PCIe efficiency 0.44: 8 RTX 5090 on PCIe Gen5 reach 28 GB/s all-reduce bus bandwidth of the
  64 GB/s peak, bounded by CPU and memory bandwidth as the NCCL maintainer explains there
  (NVIDIA/nccl issue 1639); applied to every PCIe generation alike.
- Latencies: NCCL's per-step hardware latencies for the Simple protocol ring (NVLink 3.4 us,
  PCIe 5.7 us, network 9.6 us) and its 8.4 us base latency (same tuning.cc).
"""
from __future__ import annotations

from typing import Callable

from holo_jax.errors import HoloError
from holo_jax.topology.model import DeviceSpec, Gpu, LinkSpec, Nic, Topology

GiB = 2**30

# Dense (no 2:4 sparsity) peak FLOP/s per dtype, from each GPU's NVIDIA datasheet. Keys are
# matched against NVML names and jax `device_kind`s in this order ("H100 PCIe" before "H100").
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "A100": {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12},
    "H100 PCIe": {"bfloat16": 756e12, "float16": 756e12, "float32": 51e12},
    "H100": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},  # SXM5
    "V100": {"float16": 125e12, "float32": 15.7e12},  # SXM2; no bfloat16 tensor cores
    "L40S": {"bfloat16": 362e12, "float16": 362e12, "float32": 91.6e12},
}


# Peak memory bandwidth per GPU (GB/s), from each GPU's NVIDIA datasheet: A100 40GB HBM2
# 1,555 GB/s and A100 80GB HBM2e 2,039 GB/s (SXM4), H100 SXM5 3.35 TB/s, V100 SXM2 900 GB/s,
# L40S GDDR6 864 GB/s.
HBM_GBYTE_S: dict[str, float] = {
    "A100-SXM4-40GB": 1555.0,
    "A100-SXM4-80GB": 2039.0,
    "H100-SXM5-80GB": 3350.0,
    "V100-SXM2-32GB": 900.0,
    "L40S-48GB": 864.0,
}


def peak_flops(kind: str) -> dict[str, float]:
    """Peak FLOP/s of a GPU named like NVML or jax name it; empty if it is not in the table."""
    return next((dict(v) for k, v in PEAK_FLOPS.items() if k in kind), {})


def _host(
    name: str,
    device: DeviceSpec,
    links: LinkSpec,
    pair_links: Callable[[int, int], int],
    nics: list[tuple[str, float, str]],
    gpu_nic: list[tuple[str | None, str | None]],
    numa: list[int | None],
) -> Topology:
    n = len(gpu_nic)
    return Topology(
        hosts=("host0",),
        gpus=tuple(
            Gpu(index=i, host=0, numa_node=numa[i], nearest_nic=gpu_nic[i][0], nic_path=gpu_nic[i][1]) for i in range(n)
        ),
        nics=tuple(Nic(name=nm, host=0, rate_gbit=rate, state="ACTIVE", link_layer=layer) for nm, rate, layer in nics),
        nvlinks=tuple((a, b, pair_links(a, b)) for a in range(n) for b in range(a + 1, n) if pair_links(a, b)),
        device=device,
        links=links,
        source=f"preset {name}",
    )


def dgx_a100() -> Topology:
    # DGX A100 (640 GB): 8x A100-SXM4-80GB on six NVSwitches, 12 NVLink 3.0 links per GPU
    # (600 GB/s bidirectional per GPU, A100 datasheet); 8 single-port ConnectX-6 HDR 200 Gb/s
    # InfiniBand adapters for compute traffic, one per GPU (DGX A100 datasheet; also the Selene
    # description in Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU
    # Clusters Using Megatron-LM", section 5). GPU pairs share a PCIe switch with two NICs, so each GPU has a PXB rail
    # (the HGX A100 layout of tests/topology/fixtures/01). Kernel NIC names differ on a real DGX.
    return _host(
        "dgx-a100",
        DeviceSpec("A100-SXM4-80GB", 80 * GiB, peak_flops("A100"), HBM_GBYTE_S["A100-SXM4-80GB"]),
        LinkSpec(pcie_gbyte=32.0),  # PCIe Gen4 x16: 32 GB/s per direction
        lambda a, b: 12,  # nvidia-smi shows NV12 between every pair behind NVSwitch
        [(f"mlx5_{i}", 200.0, "InfiniBand") for i in range(8)],
        [(f"mlx5_{i}", "PXB") for i in range(8)],
        [0, 0, 0, 0, 1, 1, 1, 1],
    )


def dgx_h100() -> Topology:
    # DGX H100: 8x H100-SXM5-80GB on four third-generation NVSwitches, 18 NVLink 4.0 links per
    # GPU (900 GB/s bidirectional, H100 datasheet); 8 single-port ConnectX-7 400 Gb/s NDR
    # InfiniBand adapters for compute, one per GPU (DGX H100 datasheet; the PIX path class below
    # is an assumption). Its 989 TFLOP/s BF16 is dense: the 1979 TFLOP/s headline assumes 2:4 sparsity.
    # The 0.78 NVLink efficiency is A100's carried over (NVLink SHARP, which reaches more, is
    # not modelled).
    return _host(
        "dgx-h100",
        DeviceSpec("H100-SXM5-80GB", 80 * GiB, peak_flops("H100"), HBM_GBYTE_S["H100-SXM5-80GB"]),
        LinkSpec(pcie_gbyte=64.0),  # PCIe Gen5 x16: 64 GB/s per direction
        lambda a, b: 18,
        [(f"mlx5_{i}", 400.0, "InfiniBand") for i in range(8)],
        [(f"mlx5_{i}", "PIX") for i in range(8)],
        [0, 0, 0, 0, 1, 1, 1, 1],
    )


# DGX-1 V100 hybrid cube mesh: two fully connected quads {0,1,2,3} and {4,5,6,7} joined
# GPU-to-GPU (0-4, 1-5, 2-6, 3-7); each V100 has 6 NVLink 2.0 links, so some pairs are doubled.
# The pair counts are those of a real DGX-1 (tests/topology/fixtures/04, from the OneFlow
# DLPerf report); pairs not listed (e.g. 0-5) are SYS: PCIe and the CPUs' QPI link.
_CUBE_MESH = {
    (0, 1): 1, (0, 2): 1, (0, 3): 2, (0, 4): 2, (1, 2): 2, (1, 3): 1, (1, 5): 2, (2, 3): 2, (2, 6): 1,
    (3, 7): 1, (4, 5): 1, (4, 6): 1, (4, 7): 2, (5, 6): 2, (5, 7): 1, (6, 7): 2,
}


def dgx1_v100() -> Topology:
    # 8x V100-SXM2-32GB, NVLink 2.0 at 25 GB/s per link per direction (300 GB/s bidirectional over
    # 6 links, V100 datasheet); 4x 100 Gb/s EDR InfiniBand (DGX-1 datasheet), one per GPU pair
    # behind a shared PCIe switch. V100 has no BF16, so bfloat16 plans report no compute estimate.
    return _host(
        "dgx1-v100",
        DeviceSpec("V100-SXM2-32GB", 32 * GiB, peak_flops("V100"), HBM_GBYTE_S["V100-SXM2-32GB"]),
        LinkSpec(pcie_gbyte=16.0),  # PCIe Gen3 x16: 16 GB/s per direction
        lambda a, b: _CUBE_MESH.get((a, b), 0),
        [(f"mlx5_{i}", 100.0, "InfiniBand") for i in range(4)],
        [(f"mlx5_{i // 2}", "PIX") for i in range(8)],
        [0, 0, 0, 0, 1, 1, 1, 1],
    )


def pcie_8gpu() -> Topology:
    # 8x L40S on PCIe Gen4 x16 (64 GB/s bidirectional, L40S datasheet), no NVLink; two NUMA
    # nodes of four GPUs (NODE within, SYS across), as in tests/topology/fixtures/12; 48 GB each
    # (L40S datasheet). That server's NIC rate is not published: one 100 Gb/s Ethernet (RoCE)
    # port is an ASSUMPTION, not a citation.
    return _host(
        "pcie-8gpu",
        DeviceSpec("L40S-48GB", 48 * 10**9, peak_flops("L40S"), HBM_GBYTE_S["L40S-48GB"]),
        LinkSpec(pcie_gbyte=32.0),
        lambda a, b: 0,
        [("NIC0", 100.0, "Ethernet")],
        [("NIC0", "SYS")] * 8,
        [0, 0, 0, 0, 1, 1, 1, 1],
    )


def aws_p4d() -> Topology:
    # Amazon EC2 p4d.24xlarge: 8x A100 40GB (SXM4) on NVSwitch, 600 GB/s NVLink per GPU, and
    # 400 Gb/s of Elastic Fabric Adapter networking as 4x 100 Gb/s EFA interfaces with GPUDirect
    # RDMA (AWS EC2 P4d instance page and "Amazon EC2 P4d instances deep dive", AWS Compute blog,
    # Nov 2020). Half a DGX A100's 1.6 Tb/s: the slow fabric of this preset list.
    # ASSUMPTIONS, not citations: each EFA interface serves the two GPUs behind one PCIe switch
    # (PXB), and EFA reaches InfiniBand's 0.96 of line rate. Published nccl-tests runs on p4d reach
    # less (29.6 GB/s all-reduce bus bandwidth over 4 instances, NVIDIA/nccl issue 527; the
    # calibration table prints that point), so the network here is if anything too fast, which
    # understates what gradient compression saves.
    return _host(
        "aws-p4d",
        DeviceSpec("A100-SXM4-40GB", 40 * GiB, peak_flops("A100"), HBM_GBYTE_S["A100-SXM4-40GB"]),
        LinkSpec(pcie_gbyte=32.0),  # PCIe Gen4 x16
        lambda a, b: 12,
        [(f"efa_{i}", 100.0, "Ethernet") for i in range(4)],  # EFA runs its SRD protocol over Ethernet
        [(f"efa_{i // 2}", "PXB") for i in range(8)],
        [0, 0, 0, 0, 1, 1, 1, 1],
    )


def gcp_a2_highgpu_8g() -> Topology:
    # Google Cloud a2-highgpu-8g: 8x A100 40GB on NVSwitch (NVLink 600 GB/s per GPU) and 100 Gbps
    # of VM network bandwidth (Compute Engine documentation, "GPU machine types": A2 Standard).
    # ASSUMPTIONS: one 100 Gb/s gVNIC shared by all eight GPUs over the host bridge (PHB), at
    # InfiniBand's 0.96 efficiency; NCCL over TCP usually reaches less.
    return _host(
        "gcp-a2-highgpu-8g",
        DeviceSpec("A100-SXM4-40GB", 40 * GiB, peak_flops("A100"), HBM_GBYTE_S["A100-SXM4-40GB"]),
        LinkSpec(pcie_gbyte=32.0),
        lambda a, b: 12,
        [("eth0", 100.0, "Ethernet")],
        [("eth0", "PHB")] * 8,
        [0, 0, 0, 0, 1, 1, 1, 1],
    )


PRESETS: dict[str, Callable[[], Topology]] = {
    "dgx-a100": dgx_a100,
    "dgx-h100": dgx_h100,
    "dgx1-v100": dgx1_v100,
    "pcie-8gpu": pcie_8gpu,
    "aws-p4d": aws_p4d,
    "gcp-a2-highgpu-8g": gcp_a2_highgpu_8g,
}


def preset(name: str) -> Topology:
    if name not in PRESETS:
        raise HoloError(f"unknown topology preset `{name}`; choose one of: {', '.join(PRESETS)}.")
    return PRESETS[name]()
