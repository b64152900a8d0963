"""Topology-aware parallelism: detect the GPU/NIC topology, plan the (data, fsdp, tensor) mesh.

    topology = detect().topology                      # or presets.preset("dgx-a100"), Topology.load(...),
                                                      # nvidia_smi.parse_file("topo.txt")
    mesh_plan = plan(topology, model_cfg, global_batch=512)
    devices = np.asarray(order_devices(jax.devices()))[mesh_plan.device_order]
    grid = devices.reshape(mesh_plan.mesh_shape)      # axes ("data", "fsdp", "tensor")
"""
from holo_jax.topology.detect import Detection, detect
from holo_jax.topology.model import DeviceSpec, Gpu, Island, LinkSpec, Nic, Topology, replicate
from holo_jax.topology.nvidia_smi import parse as parse_nvidia_smi
from holo_jax.topology.nvidia_smi import parse_file as parse_nvidia_smi_file
from holo_jax.topology.plan import AXES, CostParams, MeshPlan, StepEstimate, Workload, candidates, evaluate, plan
from holo_jax.topology.presets import PRESETS, preset

__all__ = [
    "AXES", "CostParams", "Detection", "DeviceSpec", "Gpu", "Island", "LinkSpec", "MeshPlan", "Nic", "PRESETS",
    "StepEstimate", "Topology", "Workload", "candidates", "detect", "evaluate", "parse_nvidia_smi",
    "parse_nvidia_smi_file", "plan", "preset", "replicate",
]
