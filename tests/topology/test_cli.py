"""`python -m holo_jax.topology` and `python -m experiments.plan_cluster` as users run them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import plan_cluster
from experiments.configs.plan_cluster import PlanClusterConfig
from holo_jax.topology.__main__ import main
from holo_jax.topology.published import SLOW_FABRIC_ROW

from tests.topology.test_nvidia_smi import A30, A100, DGX1, L40S

REPO = Path(__file__).resolve().parents[2]


def run_json(capsys, *argv: str) -> dict:
    main([*argv, "--json"])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "path, islands",
    [(A100, [list(range(8))]), (DGX1, [list(range(8))]), (A30, [[0, 1], [2, 3]]), (L40S, [[i] for i in range(8)])],
    ids=lambda x: getattr(x, "name", "")[:2],
)
def test_nvidia_smi_file(capsys, path, islands):
    out = run_json(capsys, "--nvidia-smi-topo", str(path))
    assert out["islands"] == islands
    assert {"gpus", "islands", "nics", "mesh_plan"} <= set(out)
    plan = out["mesh_plan"]
    assert set(plan["axis_sizes"]) == {"data", "fsdp", "tensor"}
    assert sorted(plan["device_order"]) == list(range(len(out["gpus"])))


def test_multi_host_file_without_nic_rates_explains_instead_of_guessing(capsys):
    out = run_json(capsys, "--nvidia-smi-topo", str(A30), "--hosts", "2")
    assert len(out["gpus"]) == 8 and out["islands"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert out["mesh_plan"] is None and "rate_gbit" in out["mesh_plan_error"]
    given = run_json(capsys, "--nvidia-smi-topo", str(A30), "--hosts", "2", "--nic-gbit", "100")
    plan = given["mesh_plan"]
    assert plan["across_hosts"]["tensor"] == 1 and plan["comm_link"]["data"] in ("network", "none")


def test_preset_with_model_and_explain(capsys):
    out = run_json(capsys, "--topology", "dgx-a100", "--hosts", "4", "--model", "gpt-7.5b",
                   "--set", "global_batch=64", "--explain")
    plan = out["mesh_plan"]
    assert plan["feasible"] and plan["why"].startswith("Chose")
    assert plan["predicted_step_seconds"] == pytest.approx(
        plan["predicted_compute_seconds"] + sum(plan["predicted_comm_seconds"].values()))
    assert len(out["candidates"]) == 5 and out["candidates"][0]["mesh"] in plan["why"]


def test_save_and_reload(capsys, tmp_path):
    saved = tmp_path / "cluster.json"
    first = run_json(capsys, "--topology", "dgx1-v100", "--hosts", "2", "--save", str(saved))
    again = run_json(capsys, "--topology", str(saved))
    assert again["islands"] == first["islands"] and again["mesh_plan"] == first["mesh_plan"]


def test_text_output(capsys):
    main(["--nvidia-smi-topo", str(A30)])
    text = capsys.readouterr().out
    assert "NVLink islands: [0,1] [2,3]" in text and "mesh plan: data=" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--topology", "dgx-2000"], "unknown topology preset `dgx-2000`"),
        (["--set", "model.colour=red"], "unknown config key `model.colour`"),
        (["--topology", "dgx-a100", "--hosts", "0"], "--hosts must be at least 1"),
    ],
)
def test_bad_arguments_are_one_sentence(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_garbled_file_exits_2_with_the_line(tmp_path):
    bad = tmp_path / "topo.txt"
    bad.write_text(A30.read_text().replace("NV4", "NV?", 1))
    done = subprocess.run([sys.executable, "-m", "holo_jax.topology", "--nvidia-smi-topo", str(bad), "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: {bad}, line 2: unknown relation `NV?` in row GPU0, column GPU1")
    assert "Traceback" not in done.stderr


def test_plan_cluster_report():
    out = plan_cluster.run(PlanClusterConfig(hosts=8, model="gpt-3.6b", global_batch=64))
    assert out["cluster"]["gpus"] == 64 and out["label"].startswith("modelled, not measured")
    for row in [out["chosen"], *out["baselines"]]:
        assert {"name", "mesh", "predicted_step_seconds"} <= set(row)
        assert set(row["mesh"]) == {"data", "fsdp", "tensor"}
    names = [b["name"] for b in out["baselines"]]
    assert names[0] == "pure data parallel" and any("across hosts" in n for n in names)
    oblivious = next(b for b in out["baselines"] if b["name"].startswith("topology-oblivious"))
    assert oblivious["mesh"] == out["chosen"]["mesh"]
    assert all(b["predicted_step_seconds"] >= out["chosen"]["predicted_step_seconds"] for b in out["baselines"]
               if b["feasible"])
    assert all({"name", "predicted", "published", "source"} <= set(r) for r in out["calibration"])
    # Every point but the EFA one (a user's report, see published.py) is within 25%; that one's
    # error is stated on its own.
    fast = [abs(r["error"]) for r in out["calibration"] if r["name"] != SLOW_FABRIC_ROW]
    assert max(fast) < 0.25
    assert out["calibration_error"]["slow_fabric_bus_bandwidth"] == next(
        r["error"] for r in out["calibration"] if r["name"] == SLOW_FABRIC_ROW)
