"""The train step with `grad_comm`: int8 + error feedback trains like fp32, only int8 (or packed
int4) payloads cross the data axis (read from the compiled HLO), a NaN on one replica skips the
step, a checkpointed run resumes exactly, and 2 processes train like 1."""
import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments.configs.pretrain import tiny
from experiments.launch_local import launch
from holo_jax.config import CheckpointConfig, GradCommConfig, MeshConfig, OptimConfig, override
from holo_jax.errors import HoloError
from holo_jax.model import CausalLM
from holo_jax.parallel.grad_comm import ExactMean, QuantizedMean
from holo_jax.parallel.grad_comm_plan import make_grad_comm, plan_grad_comm, resolve_grad_comm
from holo_jax.hlo.collective_bytes import collectives, wire_bytes_by_dtype
from holo_jax.parallel.mesh import build_mesh, cross_process_axes
from holo_jax.train.checkpoint import Checkpointer
from holo_jax.train.loop import train
from holo_jax.train.jsonl import read_jsonl, read_metrics
from holo_jax.train.optimizer import learning_rate_schedule, make_optimizer
from holo_jax.train.stages import Stage
from holo_jax.train.state import abstract_train_state, count_params, init_train_state
from holo_jax.train.stats import Stat
from holo_jax.train.step import jit_train_step, make_train_step
from holo_jax.train.tasks import NextTokenLM
from tests.train.helpers import TINY, random_batch

MARKER = 300  # a token id inside the padded vocabulary that random batches never contain
OPTIM = OptimConfig(warmup_steps=2)
STEPS = 10


class PoisonMarkedRows(Stage):
    """A NaN loss term wherever a row starts with MARKER: lets a test poison one replica only."""

    name = "poison"

    def loss(self, params, stage_state, batch, outputs, key):
        marked = jnp.any(batch["inputs"][:, 0] == MARKER)
        return {"nan": Stat(jnp.where(marked, jnp.nan, 0.0) * outputs["logits"].sum(), jnp.float32(1.0))}, {}


@dataclasses.dataclass
class Compiled:
    step: object  # the compiled executable
    hlo: str
    state: object  # the initial state
    shardings: object
    grad_comm: object
    mesh: object


def _compile(mesh_shape, grad_comm_cfg, microbatches=1, rows=16, model_cfg=TINY) -> Compiled:
    mesh = build_mesh(MeshConfig(*mesh_shape), model_cfg, jax.devices()[: int(np.prod(mesh_shape))])
    grad_comm = make_grad_comm(grad_comm_cfg, mesh)
    model, opt = CausalLM(model_cfg), make_optimizer(OPTIM, STEPS)
    stages = (PoisonMarkedRows(),)
    state, shardings = init_train_state(model, (jnp.zeros((1, model_cfg.max_len), jnp.int32),), opt, stages, mesh,
                                        grad_comm=grad_comm)
    batch = random_batch(rows=rows)
    step = jit_train_step(make_train_step(NextTokenLM(), model, opt, learning_rate_schedule(OPTIM, STEPS), stages, mesh, microbatches,
                                          grad_comm=grad_comm), shardings, batch, mesh)
    with jax.set_mesh(mesh):
        compiled = step.lower(state, batch).compile()
    return Compiled(compiled, compiled.as_text(), state, shardings, grad_comm, mesh)


@pytest.fixture(scope="module")
def data8():
    """The same tiny model on 8 data-parallel replicas, exact fp32 and int8 + error feedback."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices")
    return _compile((8, 1, 1), GradCommConfig()), _compile((8, 1, 1), GradCommConfig(scheme="int8"))


def _train(c: Compiled, batches, state=None):
    # The step donates its input state, so the shared initial state is copied, not consumed.
    state = jax.tree.map(lambda x: x.copy(), c.state) if state is None else state
    losses = []
    with jax.set_mesh(c.mesh):
        for batch in batches:
            state, metrics, _ = c.step(state, batch)
            losses.append(float(metrics["loss"]))
    return state, losses


def test_int8_with_error_feedback_trains_like_fp32(data8):
    exact, int8 = data8
    assert isinstance(exact.grad_comm, ExactMean) and isinstance(int8.grad_comm, QuantizedMean)
    batches = [random_batch(rows=16, seed=s % 2) for s in range(STEPS)]  # two batches, memorised
    exact_state, exact_losses = _train(exact, batches)
    int8_state, int8_losses = _train(int8, batches)
    assert exact_losses[-1] < exact_losses[0] - 0.3  # it does learn
    np.testing.assert_allclose(int8_losses, exact_losses, rtol=2e-3)
    # The error-feedback residuals are live, sharded one slot per replica over `data`.
    sent = int8_state.grad_comm.residuals.sent
    assert sent.shape[0] == 8 and sent.sharding.spec[0] == "data" and float(jnp.abs(sent).max()) > 0


def test_only_int8_payloads_and_their_scales_cross_the_data_axis(data8):
    exact, int8 = data8
    params = count_params(exact.state.params)
    assert jax.tree.leaves(exact.state.grad_comm) == []  # fp32: no state, nothing added
    fp32_bytes = wire_bytes_by_dtype(collectives(exact.hlo, exact.mesh), {"data"})
    assert "s8" not in fp32_bytes and fp32_bytes["f32"] >= 2 * 7 / 8 * 4 * params

    int8_bytes = wire_bytes_by_dtype(collectives(int8.hlo, int8.mesh), {"data"})
    bucket = int8.state.grad_comm.residuals.owned[0].size * 8  # padded parameter count
    assert bucket - params < 8 * 256
    # all-to-all + all-gather of one byte per value; one float32 scale per 256 values; a few scalars
    # (the replicas' mean loss terms and the non-finite flag).
    assert int8_bytes["s8"] == pytest.approx(2 * 7 / 8 * bucket)
    assert int8_bytes["f32"] == pytest.approx(2 * 7 / 8 * 4 * bucket / 256, abs=64)
    assert sum(int8_bytes.values()) < fp32_bytes["f32"] / 3.9


def test_a_nan_on_one_replica_skips_the_step(data8):
    _, int8 = data8
    state, _ = _train(int8, [random_batch(rows=16, seed=0)])  # residuals are non-zero now
    batch = random_batch(rows=16, seed=1)
    batch["inputs"][6, 0] = MARKER  # row 6 of 16 belongs to replica 3 of 8
    before = jax.device_get(state)  # the step donates `state`
    with jax.set_mesh(int8.mesh):
        after, metrics, _ = int8.step(state, batch)
    assert not bool(metrics["finite"]) and int(after.skipped_steps) == 1 and int(after.step) == 2
    assert np.abs(before.grad_comm.residuals.sent).max() > 0
    for a, b in zip(jax.tree.leaves((after.params, after.opt_state, after.grad_comm)),
                    jax.tree.leaves((before.params, before.opt_state, before.grad_comm))):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_resume_from_a_checkpoint_continues_exactly(data8, tmp_path):
    _, int8 = data8
    batches = [random_batch(rows=16, seed=s) for s in range(4)]
    _, straight = _train(int8, batches)
    halfway, first = _train(int8, batches[:2])
    ckpt = Checkpointer(tmp_path, CheckpointConfig(async_save=False))
    data = {"position": jnp.arange(16)}
    ckpt.save(2, halfway, data, force=True)
    model, opt = CausalLM(TINY), make_optimizer(OPTIM, STEPS)
    target, _ = abstract_train_state(model, (jnp.zeros((1, TINY.max_len), jnp.int32),), opt, (PoisonMarkedRows(),),
                                     int8.mesh, grad_comm=int8.grad_comm)
    restored, _ = ckpt.restore(2, target, {"position": jax.ShapeDtypeStruct((16,), jnp.int32)})
    ckpt.close()
    assert restored.grad_comm.residuals.sent.sharding == halfway.grad_comm.residuals.sent.sharding
    _, second = _train(int8, batches[2:], restored)
    assert first + second == straight  # bit-identical


def test_int4_on_a_mesh_with_fsdp_and_tensor_sends_packed_bytes_over_data_only(require_devices):
    require_devices(8)
    c = _compile((2, 2, 2), GradCommConfig(scheme="int4"), microbatches=2)
    by_dtype = wire_bytes_by_dtype(collectives(c.hlo, c.mesh), {"data"})
    bucket = c.state.grad_comm.residuals.owned[0].size * 2
    # Each of the 4 devices of a replica sends its quarter of the bucket, half a byte per value.
    assert by_dtype["u8"] == pytest.approx(2 * 1 / 2 * bucket / 2 / 4)
    assert by_dtype.get("f32", 0) < 0.1 * by_dtype["u8"] and "s8" not in by_dtype
    owned = c.state.grad_comm.residuals.owned
    assert owned.sharding.spec == P("data", ("fsdp", "tensor"), None)
    # It trains: losses after updates (not only the first, computed before any) follow exact fp32's.
    exact = _compile((2, 2, 2), GradCommConfig(), microbatches=2)
    batches = [random_batch(rows=16, seed=s % 2) for s in range(STEPS)]
    _, exact_losses = _train(exact, batches)
    _, losses = _train(c, batches)
    assert exact_losses[-1] < exact_losses[0] - 0.3
    np.testing.assert_allclose(losses[1:], exact_losses[1:], rtol=1e-2)
    assert abs(losses[-1] - exact_losses[-1]) > 0  # int4 really ran: not bit-identical to fp32


def _f32_gathered_over_fsdp_or_tensor(c: Compiled) -> float:
    """Bytes per device that all-gathers over `fsdp`/`tensor` return in float32 (FSDP's parameter
    gathers included), loop trip counts included."""
    gathers = [x for x in collectives(c.hlo, c.mesh) if x.op == "all-gather" and x.axes & {"fsdp", "tensor"}]
    return sum(nbytes * x.count for x in gathers for dtype, nbytes in x.result_bytes if dtype == "f32")


def test_the_mean_stays_in_the_parameters_sharding_on_fsdp_and_tensor(require_devices):
    """No device materialises the whole float32 gradient: the averaged gradients leave the
    collective in the parameters' own fsdp/tensor sharding, so nothing of the gradient's size is
    all-gathered over those axes and the step's temporary memory stays near fp32's."""
    require_devices(8)
    # Wide and shallow: the gradient (6.7 MB) is large next to the activations of 16 x 32 tokens.
    wide = dataclasses.replace(TINY, d_model=256, d_ff=1024)
    exact, int8 = (_compile((2, 2, 2), GradCommConfig(scheme=s), model_cfg=wide) for s in ("fp32", "int8"))
    share = 4 * count_params(exact.state.params) / 4  # one device's share of the float32 gradient
    # Only leaves replicated over an inner axis (norm scales, biases, ~1% here) are gathered back.
    assert _f32_gathered_over_fsdp_or_tensor(int8) - _f32_gathered_over_fsdp_or_tensor(exact) < 0.05 * share
    temp = lambda c: c.step.memory_analysis().temp_size_in_bytes  # noqa: E731
    assert temp(int8) < temp(exact) + share / 2


@pytest.fixture(scope="module")
def exact222():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices")
    return _compile((2, 2, 2), GradCommConfig())


@pytest.mark.parametrize("cfg", [GradCommConfig(scheme="int8", rounding="stochastic"), GradCommConfig(scheme="bf16")],
                         ids=["int8-stochastic", "bf16"])
def test_on_fsdp_and_tensor_trains_like_fp32_and_replicated_copies_stay_identical(exact222, cfg):
    c = _compile((2, 2, 2), cfg)
    batches = [random_batch(rows=16, seed=s % 2) for s in range(STEPS)]
    _, exact_losses = _train(exact222, batches)
    state, losses = _train(c, batches)
    np.testing.assert_allclose(losses, exact_losses, rtol=2e-3)
    # Every device holding a copy of the same shard (a LayerNorm scale on each `tensor` device,
    # a bias on each `fsdp` device) ends with the same bits, as the out_specs promise.
    for leaf in jax.tree.leaves((state.params, state.opt_state)):
        copies: dict[str, np.ndarray] = {}
        for shard in leaf.addressable_shards:
            first = copies.setdefault(str(shard.index), np.asarray(shard.data))
            np.testing.assert_array_equal(np.asarray(shard.data), first)


def test_hierarchical_int8_reduces_within_islands_in_float32_and_encodes_across(data8):
    """data=4 in islands of 2 (as 2 hosts x 2 devices would be), fsdp=2 inside each replica."""
    exact, _ = data8
    c = _compile((4, 2, 1), GradCommConfig(scheme="int8", island=2))
    assert c.grad_comm.island == 2
    # Attribute collectives to the split axes: same devices in the same order as c.mesh.
    found = collectives(c.hlo, c.grad_comm.collective_mesh)
    across = wire_bytes_by_dtype(found, {"data_across"})
    within = wire_bytes_by_dtype([x for x in found if "data_across" not in x.axes], {"data_within"})
    # owned[0]: one replica's reduced blocks over fsdp; each island position owns 1/hosts of its piece.
    bucket = c.state.grad_comm.residuals.owned[0].size * 2 * 2  # x hosts x island
    # Across islands: each device sends its 1/(island x fsdp) share of the bucket, one byte per value.
    assert across["s8"] == pytest.approx(2 * 1 / 2 * bucket / (2 * 2))
    assert across.get("f32", 0) < 0.05 * across["s8"]
    assert within["f32"] > 4 * across["s8"] and "s8" not in within  # the island's part is float32
    batches = [random_batch(rows=16, seed=s % 2) for s in range(STEPS)]
    _, exact_losses = _train(exact, batches)
    _, losses = _train(c, batches)
    np.testing.assert_allclose(losses, exact_losses, rtol=2e-3)


def _processes(shape, process_axis=None, hosts=2):
    """A grid of process indices for a mesh of `shape`, split into `hosts` along `process_axis`."""
    grid = np.zeros(shape, int)
    if process_axis is not None:
        index = np.arange(shape[process_axis]) * hosts // shape[process_axis]
        grid += np.expand_dims(index, [i for i in range(len(shape)) if i != process_axis])
    return grid


def test_quantized_axes_follow_the_processes_of_the_mesh(caplog):
    mesh = build_mesh(MeshConfig(2, 2, 2), TINY)
    assert cross_process_axes(mesh) == ()  # one process: nothing crosses hosts
    int8 = GradCommConfig(scheme="int8")
    plan = plan_grad_comm(int8, mesh)
    assert (plan.axes, plan.island, plan.axes_source, plan.warnings) == (("data",), 1, "mesh", ())

    mesh8 = build_mesh(MeshConfig(8, 1, 1), TINY)
    hosts = _processes((8, 1, 1), process_axis=0)  # 2 hosts x 4 devices along data
    assert cross_process_axes(mesh8, hosts) == ("data",)
    plan = plan_grad_comm(int8, mesh8, hosts)
    assert (plan.axes, plan.island, plan.cross_process_axes) == (("data",), 4, ("data",))
    assert plan_grad_comm(dataclasses.replace(int8, island=1), mesh8, hosts).island == 1  # flat on request
    grad_comm = make_grad_comm(int8, mesh8, processes=hosts)
    assert isinstance(grad_comm, QuantizedMean) and grad_comm.island == 4

    # fsdp across hosts: the quantized path cannot take it; say so and reduce exactly.
    fsdp_hosts = _processes((2, 2, 2), process_axis=1)
    plan = plan_grad_comm(int8, mesh, fsdp_hosts)
    assert plan.axes == () and plan.cross_process_axes == ("fsdp",)
    assert "fsdp cross processes" in plan.warnings[0] and "stays float32" in plan.warnings[0]
    with caplog.at_level(logging.WARNING):
        assert isinstance(make_grad_comm(int8, mesh, processes=fsdp_hosts), ExactMean)
    assert "averaged exactly" in caplog.text
    assert resolve_grad_comm(int8, mesh8, hosts) == dataclasses.replace(int8, axes=("data",), island=4)
    # Explicitly asking for `data` still quantizes it, with the same warning about fsdp.
    explicit = override(int8, ["axes=data"])
    assert explicit.axes == ("data",)
    plan = plan_grad_comm(explicit, mesh, fsdp_hosts)
    assert plan.axes == ("data",) and plan.axes_source == "config" and "fsdp" in plan.warnings[0]
    # data and tensor both across hosts: data is quantized, tensor traffic is reported as float32.
    both = _processes((2, 2, 2), process_axis=0) + 2 * _processes((2, 2, 2), process_axis=2)
    plan = plan_grad_comm(int8, mesh, both)
    assert plan.axes == ("data",) and plan.cross_process_axes == ("data", "tensor") and "tensor" in plan.warnings[0]


@pytest.mark.parametrize("cfg, message", [
    (GradCommConfig(scheme="int3"), "unknown quantization scheme"),
    (GradCommConfig(scheme="int8", block_size=255), "even number"),
    (GradCommConfig(scheme="int8", axes=("fsdp",)), "pure data-parallel mesh axes"),
    (GradCommConfig(scheme="int8", island=3), "must divide the quantized axis"),
    (GradCommConfig(scheme="int8", island=8), "at least two islands"),
])
def test_settings_that_cannot_work_get_one_clear_error(cfg, message):
    mesh = build_mesh(MeshConfig(8, 1, 1), TINY)
    with pytest.raises(HoloError, match=message):
        make_grad_comm(cfg, mesh)


def test_one_replica_has_nothing_to_encode():
    mesh = build_mesh(MeshConfig(1, 1, 1), TINY, jax.devices()[:1])
    assert isinstance(make_grad_comm(GradCommConfig(scheme="int8"), mesh), ExactMean)


@pytest.mark.slow
def test_two_processes_train_like_one_with_int8(tmp_path, require_devices):
    """int8 + error feedback over real gloo collectives (2 processes x 4 devices) = 1 process x 8.

    The two-process run is left to derive its axes from the mesh: `data` crosses processes with
    4 devices in each, so it reduces hierarchically in islands of 4, which the one-process run is
    told explicitly; equal losses show the split follows the processes."""
    require_devices(8)
    settings = {"grad_comm.scheme": "int8", "mesh.data": 8, "mesh.fsdp": 1, "mesh.tensor": 1, "log.eval_every_steps": 0,
                "log.progress_bar": "false", "log.plot": "false", "log.tensorboard": "false"}
    cfg = override(dataclasses.replace(tiny(), steps=4), [f"{k}={v}" for k, v in settings.items()] + ["grad_comm.island=4"])
    train(cfg, tmp_path / "one")
    args = ["--workdir", str(tmp_path / "two"), "--config", "tiny", "--steps", "4"]
    for k, v in settings.items():
        args += ["--set", f"{k}={v}"]
    assert launch(2, 4, "experiments.pretrain", args, timeout=300) == 0
    one, two = (read_metrics(tmp_path / run / "metrics.jsonl") for run in ("one", "two"))
    # The run records what the mesh resolved: `data` crosses the processes, in islands of 4.
    start = next(e for e in read_jsonl(tmp_path / "two" / "events.jsonl") if e["kind"] == "run_start")
    assert start["config"]["grad_comm"]["axes"] == ["data"] and start["config"]["grad_comm"]["island"] == 4
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)
