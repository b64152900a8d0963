"""Building the (data, fsdp, tensor) mesh: sizes, device order, the planner's default, bad shapes."""
import jax
import numpy as np
import pytest

from holo_jax.config import MeshConfig, ModelConfig
from holo_jax.errors import HoloError
from holo_jax.parallel.mesh import build_mesh, resolve_axis_sizes
from holo_jax.train.setup import mesh_for_run

MODEL = ModelConfig(d_model=64, n_heads=4, d_ff=128, n_layers=2, max_len=32)


@pytest.mark.parametrize("cfg, expected", [
    (MeshConfig(), (8, 1, 1)),
    (MeshConfig(data=2, fsdp=-1, tensor=2), (2, 2, 2)),
    (MeshConfig(data=1, fsdp=4, tensor=-1), (1, 4, 2)),
])
def test_resolve_axis_sizes(cfg, expected):
    assert resolve_axis_sizes(cfg, 8) == expected


def test_explicit_device_order_is_used(require_devices):
    require_devices(8)
    order = [1, 0, 3, 2, 5, 4, 7, 6]
    mesh = build_mesh(MeshConfig(data=4, fsdp=1, tensor=2), MODEL, device_order=order)
    assert [d.id for d in mesh.devices.reshape(-1)] == order
    with pytest.raises(HoloError, match="permutation"):
        build_mesh(MeshConfig(data=4, fsdp=1, tensor=2), MODEL, device_order=[0, 0, 1, 2, 3, 4, 5, 6])


def test_auto_plan_is_used_only_while_sizes_are_untouched(require_devices):
    require_devices(8)
    mesh, plan = mesh_for_run(MeshConfig(), MODEL, global_batch=8)
    assert plan is not None and dict(mesh.shape) == plan["axis_sizes"]
    assert int(np.prod(list(mesh.shape.values()))) == jax.device_count() and plan["why"]
    mesh, plan = mesh_for_run(MeshConfig(data=2, fsdp=2, tensor=2), MODEL, global_batch=8)
    assert plan is None and dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    mesh, plan = mesh_for_run(MeshConfig(plan="manual"), MODEL, global_batch=8)
    assert plan is None and dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    with pytest.raises(HoloError, match="mesh.plan must be auto or manual"):
        mesh_for_run(MeshConfig(plan="fastest"), MODEL, global_batch=8)


def test_width_not_divisible_by_fsdp_is_a_clear_error():
    with pytest.raises(HoloError, match=r"model.d_model=64 is not divisible by the fsdp axis \(3\)"):
        build_mesh(MeshConfig(data=1, fsdp=3, tensor=1), MODEL, jax.devices()[:3])
