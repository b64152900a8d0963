"""Config for `python -m experiments.plan_cluster`: plan a GPT run on a simulated GPU cluster.

default  64 DGX A100 nodes (512 GPUs), Megatron-LM's 7.5B GPT (Narayanan et al. 2021, Table 1)
         at global batch 512 x 2048 tokens, bf16 with full remat.
         Command: python -m experiments.plan_cluster --preset dgx-a100 --hosts 64 --model gpt-7.5b --json
         Expected: a few seconds on 2 CPU cores (no devices are used: everything is modelled);
         prints the chosen mesh, the naive baselines and the calibration table.
slow     the same on 64 AWS p4d.24xlarge (A100 40GB, 4x 100 Gb/s EFA per node):
         python -m experiments.plan_cluster --preset aws-p4d --hosts 64 --model gpt-7.5b --json
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PlanClusterConfig:
    preset: str = "dgx-a100"
    hosts: int = 64
    model: str = "gpt-7.5b"  # a key of holo_jax.topology.published.MODELS
    global_batch: int = 512
    microbatches: int = 1
    # Override every NIC's rate (Gb/s) to model a slower or faster fabric; None keeps the preset's.
    nic_gbit: float | None = None
    # Gradient schemes over the data axis the planner may choose from: auto (all of fp32, bf16,
    # int8, int4; the quantized ones with error feedback) or one of them. Baselines stay fp32.
    grad_comm: str = "auto"
