"""Published measurements the cost model is checked against, and the GPT shapes they used.

Every row is a number someone measured on real hardware, with where it was published; the
cost model's prediction for the same setting is printed next to it. Rows a constant was derived
from are not checks but fits, and are marked `fitted` (with the constant in `fits`): the first
Megatron-LM row sets `CostParams.compute_efficiency`, and the DGX A100 and DGX-1 inter-node
figures of one NVIDIA post set `LinkSpec.nic_efficiency` (192 of 200 GB/s, 48 of 50 GB/s: 0.96
both). Only the other rows, the held-out ones, test the model (`calibration_error`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from holo_jax.config import ModelConfig
from holo_jax.topology import workload as wl
from holo_jax.topology.cost import LinkModel, all_reduce_s
from holo_jax.topology.model import Topology, replicate
from holo_jax.topology.plan import CostParams, Workload, evaluate, host_orders
from holo_jax.topology.presets import aws_p4d, dgx1_v100, dgx_a100

MEGATRON = "Narayanan et al. 2021, Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM, Table 1"


def _gpt(d_model: int, n_layers: int, n_heads: int) -> ModelConfig:
    # Megatron-LM's GPT family: vocabulary 51,200, sequence 2,048, MLP 4 x width, bf16/fp16
    # compute with activation recomputation (the paper's FLOP count assumes it).
    return ModelConfig(vocab_size=51200, d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=4 * d_model,
                       max_len=2048, compute_dtype="bfloat16", remat="full")


# The model shapes of Narayanan et al. 2021, Table 1, rows without pipeline parallelism.
MODELS: dict[str, ModelConfig] = {
    "gpt-1.7b": _gpt(2304, 24, 24),
    "gpt-3.6b": _gpt(3072, 30, 32),
    "gpt-7.5b": _gpt(4096, 36, 32),
    "gpt-18.4b": _gpt(6144, 40, 48),
}


@dataclasses.dataclass(frozen=True)
class MegatronRow:
    model: str
    gpus: int
    tensor: int
    batch: int
    tflops_per_gpu: float  # achieved, end to end, A100 80GB on Selene (DGX A100 nodes)


MEGATRON_ROWS = (
    MegatronRow("gpt-1.7b", 32, 1, 512, 137.0),  # fitted: CostParams.compute_efficiency
    MegatronRow("gpt-3.6b", 64, 2, 512, 138.0),
    MegatronRow("gpt-7.5b", 128, 4, 512, 142.0),
    MegatronRow("gpt-18.4b", 256, 8, 1024, 135.0),
)

SLOW_FABRIC_ROW = "all-reduce bus bandwidth between 4 AWS p4d nodes, 4x 100 Gb/s EFA each (GB/s)"

NIC_EFFICIENCY = "LinkSpec.nic_efficiency"

# (name, preset builder, hosts, GPUs of host 0 in the group (None: all), published GB/s, source,
#  the constant the row was used to derive or None for a held-out row)
NCCL_ROWS = (
    ("all-reduce bus bandwidth, 2 A100 joined by 12 NVLinks (GB/s)", dgx_a100, 1, [0, 1], 208.0,
     "NVIDIA/nccl-tests issue 178 (all_reduce_perf between two NV12-connected A100s)", None),
    ("all-reduce bus bandwidth, 8 A100 on NVSwitch (GB/s)", dgx_a100, 1, None, 200.0,
     "NVIDIA/nccl-tests issue 149 (8x A100-SXM4-80GB, HPE Apollo 6500: 'a busbw of ~200 GB/s')", None),
    ("all-reduce bus bandwidth between DGX A100 nodes, 8 HDR NICs each (GB/s)", dgx_a100, 2, None, 192.0,
     "NVIDIA developer blog, Accelerating IO in the Modern Data Center: Network IO (2020): 'DGX A100 at 192 GB/s'", NIC_EFFICIENCY),
    ("all-reduce bus bandwidth between DGX-1 nodes, 4 EDR NICs each (GB/s)", dgx1_v100, 2, None, 48.0,
     "same NVIDIA blog: 'DGX-1 at 48 GB/s'", NIC_EFFICIENCY),
    # A user's report, not a vendor figure, and in a thread titled as a slowness complaint; it is
    # the only published p4d measurement we found, so it is shown rather than fitted to.
    (SLOW_FABRIC_ROW, aws_p4d, 4, None, 29.6,
     "NVIDIA/nccl issue 527 (nccl-tests all_reduce_perf, 1 GiB float, 4 p4d.24xlarge instances, NCCL 2.9.9)", None),
)


def megatron_prediction(row: MegatronRow, params: CostParams = CostParams()) -> float:
    """Predicted TFLOP/s per GPU for a Table 1 row: tensor parallel inside each DGX A100, data
    parallel over the rest, as the paper ran them. `step_flops` is the paper's equation (3)."""
    model = MODELS[row.model]
    topology = replicate(dgx_a100(), row.gpus // 8)
    # Megatron-LM all-reduces fp16 gradients unless --accumulate-allreduce-grads-in-fp32 (an
    # opt-in switch) is given.
    work = Workload(model, row.batch, model.max_len, grad_bytes=2)
    within = {"data": 8 // row.tensor, "fsdp": 1, "tensor": row.tensor}
    across = {"data": row.gpus // 8, "fsdp": 1, "tensor": 1}
    order = host_orders(topology)["NVLink path"]
    step_s = evaluate(topology, work, within, across, "NVLink path", order, params).estimate.step_s
    return wl.step_flops(model, row.batch, model.max_len) / row.gpus / step_s / 1e12


def bus_bandwidth_prediction(
    preset: Callable[[], Topology], hosts: int, gpus: list[int] | None, nbytes: float = 2**30
) -> float:
    """Bus bandwidth (nccl-tests' definition) the model predicts for a 1 GiB all-reduce."""
    topology = replicate(preset(), hosts)
    links = LinkModel(topology)
    members = range(len(topology.gpus)) if gpus is None else [topology.position[i] for i in gpus]
    group = links.group(list(members))
    n = group.ranks
    return 2 * (n - 1) / n * nbytes / all_reduce_s(nbytes, group) / 1e9


def calibration(params: CostParams = CostParams()) -> list[dict[str, Any]]:
    """Predicted next to published, one row per point; `fits` names the constant a fitted row set."""
    rows = [
        {
            "name": f"Megatron-LM {row.model}, {row.gpus}x A100, tensor {row.tensor} (TFLOP/s per GPU)",
            "predicted": megatron_prediction(row, params),
            "published": row.tflops_per_gpu,
            "source": MEGATRON,
            "fits": "CostParams.compute_efficiency" if row is MEGATRON_ROWS[0] else None,
        }
        for row in MEGATRON_ROWS
    ]
    rows += [
        {"name": name, "predicted": bus_bandwidth_prediction(preset, hosts, gpus), "published": published,
         "source": source, "fits": fits}
        for name, preset, hosts, gpus, published, source, fits in NCCL_ROWS
    ]
    for row in rows:
        row["fitted"] = row["fits"] is not None
        row["error"] = row["predicted"] / row["published"] - 1
    return rows


def calibration_error(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and max absolute relative error over the held-out rows, with and without the slow
    fabric's point (a user's report of a slow run, so it is also given on its own)."""
    held_out = [abs(r["error"]) for r in rows if not r["fitted"]]
    fast = [abs(r["error"]) for r in rows if not r["fitted"] and r["name"] != SLOW_FABRIC_ROW]
    return {
        "held_out_points": len(held_out),
        "fitted_points": [r["name"] for r in rows if r["fitted"]],
        "mean_abs_held_out": sum(held_out) / len(held_out),
        "max_abs_held_out": max(held_out),
        "mean_abs_held_out_without_slow_fabric": sum(fast) / len(fast),
        "max_abs_held_out_without_slow_fabric": max(fast),
        "slow_fabric_bus_bandwidth": next(r["error"] for r in rows if r["name"] == SLOW_FABRIC_ROW),
    }
