"""`model.remat=auto` in the trainer: the planner's choice trains, is recorded, and follows the budget."""
import dataclasses

import pytest

from experiments.configs.pretrain import tiny
from holo_jax.config import CheckpointConfig, MemoryConfig
from holo_jax.errors import HoloError
from holo_jax.train.events import EventLog
from holo_jax.train.loop import train


def auto(budget_bytes: int, steps: int = 4):
    cfg = tiny()
    return dataclasses.replace(
        cfg, steps=steps, model=dataclasses.replace(cfg.model, remat="auto"),
        memory=MemoryConfig(budget_bytes=budget_bytes, policies=("none", "full")),
        checkpoint=CheckpointConfig(every_steps=2, keep=2),
        log=dataclasses.replace(cfg.log, eval_every_steps=0, progress_bar=False, plot=False, tensorboard=False),
    )


def plans(workdir) -> list[dict]:
    return [e for e in EventLog(workdir / "events.jsonl").read() if e["kind"] == "remat_plan"]


def test_auto_remat_follows_the_budget_across_a_resume(tmp_path, capsys):
    first = train(auto(budget_bytes=2**40), tmp_path, stop_after=2)
    assert first.final_step == 2
    (plan,) = plans(tmp_path)
    assert (plan["policy"], plan["microbatches"]) == ("none", 1)
    assert "remat plan: budget" in capsys.readouterr().out
    none_peak = next(c["peak_bytes"] for c in plan["candidates"] if c["policy"] == "none")

    # Resumed on a device too small for the no-remat step: the planner switches policy and training goes on.
    second = train(auto(budget_bytes=none_peak - 1), tmp_path)
    assert second.reason == "completed" and second.final_step == 4
    plan = plans(tmp_path)[-1]
    assert plan["policy"] == "full" and plan["peak_bytes"] <= none_peak - 1


def test_auto_remat_without_a_budget_on_cpu_is_one_clear_error(tmp_path):
    with pytest.raises(HoloError, match="remat=auto needs a per-device memory budget"):
        train(auto(budget_bytes=0), tmp_path)
    assert not (tmp_path / "checkpoints").exists()
