"""The planner: the device-order contract, islands, feasibility, and a mesh that trains."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from holo_jax.config import MeshConfig, ModelConfig, OptimConfig
from holo_jax.errors import HoloError
from holo_jax.model import CausalLM
from holo_jax.parallel.mesh import build_mesh
from holo_jax.topology.model import DeviceSpec, Gpu, LinkSpec, Nic, Topology, replicate
from holo_jax.topology.nvidia_smi import parse_file
from holo_jax.topology.plan import AXES, Workload, candidates, device_order, evaluate_order, host_orders, plan
from holo_jax.topology.presets import dgx1_v100, dgx_a100, pcie_8gpu
from holo_jax.topology.published import MODELS
from holo_jax.train.optimizer import learning_rate_schedule, make_optimizer
from holo_jax.train.state import init_train_state
from holo_jax.train.step import jit_train_step, make_train_step
from holo_jax.train.tasks import NextTokenLM

from tests.topology.test_nvidia_smi import A30
from tests.train.helpers import TINY, random_batch

GiB = 2**30


def crossed_pairs(hosts: int = 2, **links) -> Topology:
    """`hosts` x 4 GPUs whose NVLink pairs are (0,2) and (1,3): device-id order splits every pair."""
    return replicate(Topology(
        hosts=("h",),
        gpus=tuple(Gpu(index=i, host=0, nearest_nic="mlx5_0", nic_path="PIX") for i in range(4)),
        nics=(Nic("mlx5_0", 0, 100.0, "ACTIVE", "InfiniBand"),),
        nvlinks=((0, 2, 4), (1, 3, 4)),
        device=DeviceSpec("A30", 24 * GiB, {"float32": 10e12}),
        links=LinkSpec(**links),
        source="crossed pairs",
    ), hosts)


def tensor_groups(p) -> list[list[int]]:
    return np.asarray(p.device_order).reshape(-1, p.axis_sizes["tensor"]).tolist()


def island_ids(topo: Topology, positions) -> set[int]:
    return {id(topo.island_of[topo.gpus[p].index]) for p in positions}


def test_device_order_puts_the_inner_split_on_one_host():
    local = [[10 * h + s for s in range(4)] for h in range(3)]  # 3 hosts x 4 slots, values = (host, slot)
    order = device_order({"data": 1, "fsdp": 2, "tensor": 2}, {"data": 3, "fsdp": 1, "tensor": 1}, local)
    mesh = order.reshape(3, 2, 2)
    assert (mesh // 10 == np.arange(3)[:, None, None]).all()  # each data index is one host
    assert mesh[1].tolist() == [[10, 11], [12, 13]]  # tensor pairs are consecutive slots


def test_every_candidate_is_a_permutation_with_the_right_shape():
    topo = replicate(dgx1_v100(), 2)
    work = Workload(TINY, 16, 32)
    for p in candidates(topo, work):
        assert sorted(p.device_order) == list(range(16))
        assert set(p.axis_sizes) == set(AXES)
        assert np.prod(p.mesh_shape) == 16
        assert all(p.axis_sizes[a] == p.within_host[a] * p.across_hosts[a] for a in AXES)


def test_tensor_groups_are_islands_even_when_device_ids_split_them():
    topo = crossed_pairs()
    work = Workload(TINY, 8, 32)
    best_t2 = next(p for p in candidates(topo, work) if p.axis_sizes["tensor"] == 2)
    assert best_t2.tensor_in_island and best_t2.order == "NVLink path"
    assert all(len(island_ids(topo, g)) == 1 for g in tensor_groups(best_t2))


def test_tensor_stays_in_islands_when_a_plan_that_does_exists():
    # Make NVLink absurdly slow and PCIe fast: by time alone, tensor groups across islands win.
    topo = crossed_pairs(hosts=1, nvlink_gbyte_per_link=0.001, pcie_gbyte=1000.0)
    big = ModelConfig(d_model=4096, n_layers=8, n_heads=32, d_ff=16384, max_len=512)
    ranked = candidates(topo, Workload(big, 4, 512))
    fastest = min((p for p in ranked if p.feasible), key=lambda p: p.estimate.step_s)
    assert fastest.axis_sizes["tensor"] > 1 and not fastest.tensor_in_island  # the premise
    chosen = plan(topo, big, 4, 512)
    assert chosen.feasible and chosen.tensor_in_island


@pytest.mark.parametrize("name", ["gpt-3.6b", "gpt-7.5b", "gpt-18.4b"])
def test_large_models_on_dgx_a100_keep_tensor_inside_hosts(name):
    topo = replicate(dgx_a100(), 8)
    chosen = plan(topo, MODELS[name], 128)
    assert chosen.feasible and chosen.tensor_in_island and chosen.across_hosts["tensor"] == 1
    assert chosen.estimate.memory.total <= chosen.estimate.memory_budget_bytes


def test_cube_mesh_pairs_use_double_links():
    topo = dgx1_v100()
    path = host_orders(topo)["NVLink path"][0]
    counts = {(a, b): n for a, b, n in topo.nvlinks}
    assert [counts[tuple(sorted(path[i:i + 2]))] for i in range(0, 8, 2)] == [2, 2, 2, 2]
    # Wide activations and few parameters: tensor traffic dominates, so the NV2 pairs win.
    wide = ModelConfig(d_model=1024, n_heads=16, d_ff=4096, n_layers=2, max_len=2048, compute_dtype="float16")
    best_t2 = next(p for p in candidates(topo, Workload(wide, 64, 2048))
                   if p.axis_sizes == {"data": 4, "fsdp": 1, "tensor": 2})
    assert [counts[tuple(sorted(g))] for g in tensor_groups(best_t2)] == [2, 2, 2, 2]


def test_infeasible_candidates_say_why():
    topo = replicate(pcie_8gpu(), 2)
    model = ModelConfig(d_model=96, n_heads=6, d_ff=384, n_layers=2, max_len=64)

    def problems(batch, microbatches):
        return {p.label(): p.problems for p in candidates(topo, Workload(model, batch, 64, microbatches))}

    two = problems(48, 2)
    assert two["data=4 x fsdp=1 x tensor=4"] == ("model shape: n_heads=6 is not divisible by tensor=4",)
    assert two["data=16 x fsdp=1 x tensor=1"] == ("batch: per-replica batch 3 is not divisible by 2 microbatches",)
    assert two["data=4 x fsdp=2 x tensor=2"] == ()
    assert problems(40, 1)["data=16 x fsdp=1 x tensor=1"] == ("batch: global batch 40 is not divisible by data*fsdp=16",)


def test_memory_drops_plans_and_nothing_fitting_is_an_error():
    topo = dgx1_v100()
    huge = MODELS["gpt-18.4b"]
    with pytest.raises(HoloError, match="no data x fsdp x tensor split of the 8 devices can run this model"):
        plan(topo, huge, 8)
    chosen = plan(replicate(dgx_a100(), 2), MODELS["gpt-7.5b"], 16)
    assert "dropped" in chosen.why and "memory" in chosen.why


def test_why_explains_the_choice():
    chosen = plan(replicate(dgx_a100(), 4), MODELS["gpt-7.5b"], 64)
    assert chosen.why.startswith(f"Chose {chosen.label()}")
    assert "Next best" in chosen.why and "predicted" in chosen.why
    assert chosen.to_dict()["axis_sizes"] == chosen.axis_sizes


def test_evaluate_order_rejects_bad_orders():
    topo = dgx1_v100()
    work = Workload(TINY, 8, 32)
    sizes = {"data": 8, "fsdp": 1, "tensor": 1}
    with pytest.raises(HoloError, match="must be a permutation"):
        evaluate_order(topo, work, sizes, np.zeros(8, int), "bad")
    with pytest.raises(HoloError, match="does not have 8 devices"):
        evaluate_order(topo, work, {**sizes, "data": 4}, np.arange(8), "bad")


def test_planned_mesh_trains_on_8_cpu_devices(require_devices, tmp_path):
    """2 hosts x 4 GPUs in islands of 2, described by a file, simulated by 8 CPU devices."""
    require_devices(8)
    crossed_pairs().save(tmp_path / "cluster.json")
    topo = Topology.load(tmp_path / "cluster.json")
    model_cfg = ModelConfig(d_model=32, n_heads=4, d_ff=64, n_layers=1, max_len=16)  # compiles quickly
    work = Workload(model_cfg, 8, model_cfg.max_len)
    planned = next(p for p in candidates(topo, work) if p.feasible and p.axis_sizes["tensor"] == 2)

    mesh = build_mesh(MeshConfig(*planned.mesh_shape), model_cfg, jax.devices(), planned.device_order)
    for group in mesh.devices.reshape(-1, 2):
        positions = [d.id for d in group]  # CPU device i is position i of the topology's device order
        assert len(island_ids(topo, positions)) == 1

    # Train two steps on the planned mesh; the first loss must match an unsharded forward pass.
    opt = make_optimizer(OptimConfig(), 3)
    model = CausalLM(model_cfg)
    state, shardings = init_train_state(model, (jnp.zeros((1, model_cfg.max_len), jnp.int32),), opt, (), mesh)
    initial_params = jax.device_get(state.params)  # the step donates the state's buffers
    batches = [random_batch(8, model_cfg.max_len, seed=i) for i in range(2)]
    step = jit_train_step(make_train_step(NextTokenLM(), model, opt, learning_rate_schedule(OptimConfig(), 3), (), mesh),
                          shardings, batches[0], mesh)
    with jax.set_mesh(mesh):
        losses = []
        for batch in batches:
            state, metrics, _ = step(state, batch)
            losses.append(float(metrics["loss"]))
    logits, _ = model.apply({"params": initial_params}, batches[0]["inputs"])
    reference = optax.softmax_cross_entropy_with_integer_labels(logits, batches[0]["targets"]).mean()
    assert losses[0] == pytest.approx(float(reference), rel=1e-5)
    assert np.isfinite(losses[1]) and int(state.step) == 2


def test_a30_file_plans_and_keeps_pairs_together():
    topo = parse_file(A30)
    work = Workload(TINY, 8, 32)
    t2 = next(p for p in candidates(topo, work) if p.axis_sizes["tensor"] == 2)
    assert sorted(sorted(g) for g in tensor_groups(t2)) == [[0, 1], [2, 3]]
