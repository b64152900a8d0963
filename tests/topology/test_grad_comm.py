"""The planner's choice of gradient-communication scheme, its wire format, and bad input."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import plan_cluster
from experiments.configs.plan_cluster import PlanClusterConfig
from holo_jax.config import MeshConfig
from holo_jax.errors import HoloError
from holo_jax.train.setup import mesh_for_run
from holo_jax.parallel.quantize import Codec
from holo_jax.topology import grad_wire as gw
from holo_jax.topology import workload as wl
from holo_jax.topology.__main__ import main as topology_main
from holo_jax.topology.cost import LinkModel, all_gather_s, all_reduce_s, reduce_scatter_s, two_phase_s
from holo_jax.topology.model import Topology, replicate
from holo_jax.topology.plan import Workload, candidates, plan
from holo_jax.topology.presets import aws_p4d, dgx_a100
from holo_jax.topology.published import MODELS

from tests.train.helpers import TINY

P4D_8 = replicate(aws_p4d(), 8)


@pytest.mark.parametrize("scheme", ["bf16", "int8", "int4"])
@pytest.mark.parametrize("block_size", [256, 64])
def test_wire_bytes_are_what_the_encoder_emits(scheme, block_size):
    # The shapes the real encoder produces for a [devices, blocks, block_size] bucket, as
    # collectives.two_phase_pmean sends them in its all-to-all.
    chunks = jax.ShapeDtypeStruct((4, 3, block_size), jnp.float32)
    encoded = jax.eval_shape(Codec(scheme, block_size).encode, chunks)
    sent = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(encoded))
    assert gw.wire_bytes(4 * 3 * block_size, scheme, block_size) == sent
    # Partial blocks are padded to whole ones, as quantize.to_blocks does.
    assert gw.wire_bytes(4 * 3 * block_size - 1, scheme, block_size) == sent
    assert gw.wire_bytes(1000, "fp32") == 4000


def test_two_phase_is_reduce_scatter_plus_all_gather_with_one_rank_per_host():
    links = LinkModel(P4D_8)
    one_per_host = links.group([h * 8 for h in range(8)])
    nbytes = 1e9
    assert two_phase_s(nbytes, one_per_host) == pytest.approx(
        reduce_scatter_s(nbytes, one_per_host) + all_gather_s(nbytes, one_per_host))
    # Over all 8 GPUs of each host the exchange is flat: every GPU sends 7/8 of its vector through
    # its own NIC share, where a hierarchical ring crosses each host boundary with one copy.
    everyone = links.group(list(range(64)))
    assert two_phase_s(nbytes, everyone) > 6 * all_reduce_s(nbytes, everyone)


def test_a_quantized_scheme_wins_on_the_slow_fabric_when_allowed():
    model = MODELS["gpt-3.6b"]
    exact = plan(P4D_8, model, 64)
    assert exact.grad_comm == "fp32" and set(exact.scheme_step_s) == {"fp32"}
    auto = plan(P4D_8, model, 64, grad_comm=gw.SCHEMES)
    assert auto.grad_comm in gw.QUANTIZED and auto.estimate.step_s < exact.estimate.step_s
    assert auto.estimate.grad_comm_s["encode_decode"] > 0
    assert auto.to_dict()["grad_comm"] == auto.grad_comm
    assert f"{auto.grad_comm} gradients" in auto.why and "fp32" in auto.why
    # What was tried is what was allowed, and the choice is the fastest of those that fit.
    fitting = {s: t for s, t in auto.scheme_step_s.items() if t is not None}
    assert set(auto.scheme_step_s) == set(gw.SCHEMES) and min(fitting, key=fitting.get) == auto.grad_comm


def test_quantization_memory_is_the_devices_part_and_can_rule_a_scheme_out():
    # QuantizedMean keeps the mean in the parameters' fsdp/tensor sharding: beyond the residuals
    # and wire buffers a device holds one packed float32 copy of its part, never the whole gradient.
    chosen = plan(P4D_8, MODELS["gpt-7.5b"], 64, grad_comm=("fp32", "int8"))
    assert chosen.grad_comm == "int8"
    d, f, t = chosen.mesh_shape
    part = wl.param_count(MODELS["gpt-7.5b"]) / (f * t)
    island = chosen.within_host["data"]  # the data ranks of one host, reduced in float32 first
    assert chosen.estimate.memory.grad_comm == pytest.approx(
        gw.quantized_memory_bytes(part / island, "int8", d // island, island))
    assert chosen.estimate.memory.grad_comm < 3 * wl.F32 * part
    assert "regather" not in chosen.estimate.grad_comm_s
    # 18.4B on 40 GB GPUs: the residuals do not fit next to the sharded state; fp32 does.
    big = plan(P4D_8, MODELS["gpt-18.4b"], 64, grad_comm=("fp32", "int8"))
    assert big.grad_comm == "fp32" and big.scheme_step_s["int8"] is None


def test_one_replica_is_priced_as_the_exact_reduction():
    work = Workload(MODELS["gpt-3.6b"], 8, MODELS["gpt-3.6b"].max_len, grad_comm=("int8",))
    ranked = candidates(dgx_a100(), work)
    one_replica = [p for p in ranked if p.axis_sizes["data"] == 1]
    replicated = [p for p in ranked if p.axis_sizes["data"] > 1]
    assert one_replica and replicated  # both kinds are among the candidates of 8 GPUs
    # Nothing to reduce over: only the exact reduction is priced, whatever was allowed.
    assert all(p.grad_comm == "fp32" and set(p.scheme_step_s) == {"fp32"} for p in one_replica)
    assert all(p.grad_comm == "int8" and set(p.scheme_step_s) == {"int8"} for p in replicated)


def test_mesh_for_run_prices_the_configured_scheme(require_devices):
    require_devices(8)
    _, exact = mesh_for_run(MeshConfig(), TINY, global_batch=8)
    assert exact["grad_comm"] == "fp32"
    _, quantized = mesh_for_run(MeshConfig(), TINY, global_batch=8, grad_comm_scheme="int8")
    # 8 devices and a batch of 8 for a tiny model: the planner replicates over data, so the
    # configured scheme is the one priced and chosen.
    assert quantized["axis_sizes"]["data"] > 1 and quantized["grad_comm"] == "int8"
    assert set(quantized["scheme_step_seconds"]) <= {"int8", "fp32"}


@pytest.mark.parametrize(
    "kwargs, message",
    [({"grad_comm": ("int3",)}, "unknown gradient communication scheme `int3`"),
     ({"grad_comm": ()}, "needs at least one scheme"),
     ({"microbatches": 0}, "microbatches must be at least 1"),
     ({"global_batch": 0}, "global batch must be at least 1")],
)
def test_bad_workloads_are_one_sentence(kwargs, message):
    with pytest.raises(HoloError, match=message):
        Workload(**{"model": TINY, "global_batch": 8, "seq_len": 32, **kwargs})


@pytest.mark.parametrize("rate, message", [
    (0, "rate_gbit=0.*give a positive rate"),
    (-100, "rate_gbit=-100.*give a positive rate"),
    # NaN is not JSON (Python's json reads it); every float field rejects it on reading.
    ("NaN", r"nics\[0\]\.rate_gbit must be a finite number, got nan"),
])
def test_topology_file_with_bad_nic_rate(tmp_path, rate, message):
    data = dgx_a100().to_dict()
    data["nics"][0]["rate_gbit"] = rate
    path = tmp_path / "topo.json"
    path.write_text(json.dumps(data).replace('"NaN"', "NaN"))
    with pytest.raises(HoloError, match=message):
        Topology.load(path)


def test_plan_cluster_on_the_slow_fabric(capsys):
    plan_cluster.main(["--preset", "aws-p4d", "--hosts", "8", "--model", "gpt-3.6b", "--global-batch", "64",
                       "--grad-comm", "int8", "--json"])
    out = json.loads(capsys.readouterr().out)
    chosen, mesh_only = out["chosen"], out["chosen_fp32"]
    assert chosen["grad_comm"] == "int8" and mesh_only["grad_comm"] == "fp32"
    assert out["workload"]["grad_comm_allowed"] == ["int8"]
    for row in [chosen, mesh_only, *out["baselines"]]:
        assert {"name", "mesh", "predicted_step_seconds", "grad_comm"} <= set(row)
    assert all(b["grad_comm"] == "fp32" for b in out["baselines"])
    pure_dp = next(b for b in out["baselines"] if b["name"] == "pure data parallel")
    # Savings are derived from the printed predictions, not asserted as constants.
    assert pure_dp["chosen_saving"] == pytest.approx(
        1 - chosen["predicted_step_seconds"] / pure_dp["predicted_step_seconds"])
    assert pure_dp["chosen_speedup"] == pytest.approx(
        pure_dp["predicted_step_seconds"] / chosen["predicted_step_seconds"] - 1)
    assert pure_dp["chosen_fp32_saving"] == pytest.approx(
        1 - mesh_only["predicted_step_seconds"] / pure_dp["predicted_step_seconds"])
    assert chosen["predicted_step_seconds"] < pure_dp["predicted_step_seconds"]
    assert chosen["predicted_step_seconds"] < mesh_only["predicted_step_seconds"]
    assert all({"name", "predicted", "published", "source"} <= set(r) for r in out["calibration"])
    assert math.isfinite(out["calibration_error"]["slow_fabric_bus_bandwidth"])


def _fails(main, argv, capsys, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "argv, message",
    [(["--microbatches", "0"], "--microbatches must be at least 1"),
     (["--global-batch", "0"], "--global-batch must be at least 1"),
     (["--global-batch", "-8"], "--global-batch must be at least 1"),
     (["--nic-gbit", "0"], "--nic-gbit must be a positive number"),
     (["--nic-gbit", "-100"], "--nic-gbit must be a positive number"),
     (["--nic-gbit", "nan"], "--nic-gbit must be a positive number"),
     (["--nic-gbit", "inf"], "--nic-gbit must be a positive number"),
     (["--preset", "dgx1-v100", "--hosts", "1", "--model", "gpt-18.4b", "--global-batch", "8"],
      "no data x fsdp x tensor split of the 8 devices can run this model: the closest")],
)
def test_plan_cluster_bad_input(capsys, argv, message):
    _fails(plan_cluster.main, ["--hosts", "2", *argv], capsys, message)


@pytest.mark.parametrize(
    "argv, message",
    [(["--nic-gbit", "0"], "--nic-gbit must be a positive number"),
     (["--nic-gbit", "nan"], "--nic-gbit must be a positive number"),
     (["--set", "microbatches=0"], "microbatches must be at least 1"),
     (["--set", "global_batch=-1"], "global_batch must be at least 1, got -1"),
     (["--set", "grad_comm.scheme=int3"], "grad_comm.scheme must be fp32, bf16, int8 or int4, got `int3`")],
)
def test_topology_cli_bad_input(capsys, argv, message):
    _fails(topology_main, ["--topology", "dgx-a100", "--hosts", "2", *argv], capsys, message)


def test_run_checks_its_config_too():
    with pytest.raises(HoloError, match="--microbatches must be at least 1"):
        plan_cluster.run(PlanClusterConfig(microbatches=0))
    assert np.isfinite(plan_cluster.run(PlanClusterConfig(hosts=2, model="gpt-1.7b", global_batch=16))
                       ["chosen"]["predicted_step_seconds"])
