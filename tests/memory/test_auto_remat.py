"""`model.remat=auto` and the default in the trainer: the planner's choice trains, is recorded in
events and metrics, and follows the budget; the default plans only where a budget is known."""
import dataclasses
import json
import types

import pytest

from experiments.configs.pretrain import tiny
from holo_jax.config import CheckpointConfig, MemoryConfig
from holo_jax.errors import HoloError
from holo_jax.memory import resolve_remat
from holo_jax.train.jsonl import read_jsonl, read_metrics
from holo_jax.train.loop import train


def auto(budget_bytes: int, steps: int = 4, remat: str = "auto"):
    cfg = tiny()
    return dataclasses.replace(
        cfg, steps=steps, model=dataclasses.replace(cfg.model, remat=remat),
        memory=MemoryConfig(budget_bytes=budget_bytes, policies=("none", "full")),
        checkpoint=CheckpointConfig(every_steps=2, keep=2),
        log=dataclasses.replace(cfg.log, eval_every_steps=0, progress_bar=False, plot=False, tensorboard=False),
    )


def plans(workdir) -> list[dict]:
    return [e for e in read_jsonl(workdir / "events.jsonl") if e["kind"] == "remat_plan"]


def test_auto_remat_follows_the_budget_across_a_resume(tmp_path, capsys):
    first = train(auto(budget_bytes=2**40), tmp_path, stop_after=2)
    assert first.final_step == 2
    (plan,) = plans(tmp_path)
    assert (plan["policy"], plan["microbatches"]) == ("none", 1)
    assert "remat plan: budget" in capsys.readouterr().out
    none_peak = next(c["peak_bytes"] for c in plan["candidates"] if c["policy"] == "none")
    first_row = read_metrics(tmp_path / "metrics.jsonl")[0]
    assert (first_row["step"], first_row["remat_requested"], first_row["remat_policy"]) == (1, "auto", "none")
    assert first_row["remat_peak_bytes"] == none_peak and first_row["remat_budget_bytes"] == 2**40

    # Resumed on a device too small for the no-remat step: the planner switches policy and training goes on.
    second = train(auto(budget_bytes=none_peak - 1), tmp_path)
    assert second.reason == "completed" and second.final_step == 4
    plan = plans(tmp_path)[-1]
    assert plan["policy"] == "full" and plan["peak_bytes"] <= none_peak - 1
    # The resumed stretch's first row carries the new decision; other rows carry none.
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows if "remat_policy" in r] == [1, 3]
    assert rows[2]["remat_policy"] == "full" and rows[2]["remat_peak_bytes"] == plan["peak_bytes"]


def test_auto_remat_without_a_budget_on_cpu_is_one_clear_error(tmp_path):
    with pytest.raises(HoloError, match="remat=auto needs a per-device memory budget"):
        train(auto(budget_bytes=0), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_default_plans_where_a_budget_is_known_and_resumes_where_none_is(tmp_path):
    # With memory.budget_bytes set, the default plans; "none" fits this budget, so planning
    # compiled that one candidate only: no more start-up compiles than training without a planner.
    first = train(auto(budget_bytes=2**40, remat="default"), tmp_path, stop_after=2)
    assert first.final_step == 2
    ((plan,), row) = plans(tmp_path), read_metrics(tmp_path / "metrics.jsonl")[0]
    assert [(c["policy"], c["microbatches"]) for c in plan["candidates"]] == [("none", 1)]
    assert (row["remat_requested"], row["remat_policy"], row["remat_candidates"]) == ("default", "none", 1)
    recorded = json.loads((tmp_path / "config.json").read_text())["config"]
    assert recorded["model"]["remat"] == "default"  # as asked, not as this machine resolved it

    # Resumed where no budget is known (a CPU, memory.budget_bytes unset): the same recorded config
    # is accepted, the default resolves to "none" without planning, and the metrics row says so.
    second = train(auto(budget_bytes=0, remat="default"), tmp_path)
    assert second.reason == "completed" and second.final_step == 4
    assert len(plans(tmp_path)) == 1
    assert json.loads((tmp_path / "config.json").read_text())["config"]["model"] == recorded["model"]
    row = read_metrics(tmp_path / "metrics.jsonl")[2]
    assert row["step"] == 3 and "loss" in row
    assert (row["remat_requested"], row["remat_policy"], row["remat_microbatches"]) == ("default", "none", 1)
    assert "remat_peak_bytes" not in row


def _device(bytes_limit: int | None, platform: str = "gpu"):
    stats = {"bytes_limit": bytes_limit} if bytes_limit else None
    return types.SimpleNamespace(platform=platform, memory_stats=lambda: stats)


def test_resolve_remat_default_follows_what_is_known_about_memory():
    cpu, gpu = [_device(None, "cpu")], [_device(1000), _device(2000)]
    assert resolve_remat("default", 0, cpu) == ("none", None)
    assert resolve_remat("default", 500, cpu) == ("auto", 500)
    assert resolve_remat("default", 0, gpu) == ("auto", 900)  # 90% of the smallest device
    assert resolve_remat("auto", 0, gpu) == ("auto", 900)
    assert resolve_remat("full", 0, gpu) == ("full", None)  # a named policy is never planned
    with pytest.raises(HoloError, match="remat=auto needs a per-device memory budget and cpu devices"):
        resolve_remat("auto", 0, cpu)
    with pytest.raises(HoloError, match="unknown remat policy `dot`"):
        resolve_remat("dot", 0, gpu)
