"""The host loop end to end on the embedded corpus: loss falls, resume is exact, outputs exist."""
import dataclasses
import json

import numpy as np
import pytest

from experiments.configs.pretrain import tiny
from holo_jax.config import CheckpointConfig
from holo_jax.train.loop import train
from holo_jax.train.jsonl import read_jsonl, read_metrics


def small(steps: int, **kw):
    cfg = tiny()
    return dataclasses.replace(
        cfg, steps=steps, checkpoint=CheckpointConfig(every_steps=4, keep=2),
        log=dataclasses.replace(cfg.log, eval_every_steps=0, progress_bar=False, plot=False, tensorboard=False), **kw,
    )


def losses(workdir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(workdir / "metrics.jsonl")]


@pytest.mark.slow
def test_loss_falls_on_embedded_corpus(tmp_path):
    cfg = dataclasses.replace(tiny(), log=dataclasses.replace(tiny().log, progress_bar=False))
    result = train(cfg, tmp_path)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, cfg.steps + 1))  # every step logged once
    first, last = np.mean([r["loss"] for r in rows[:3]]), np.mean([r["loss"] for r in rows[-3:]])
    assert first > 5.0 and last < 3.2, (first, last)  # uniform over 258 ids is 5.55 nats
    evals = [r for r in rows if "eval_loss" in r]
    assert evals and evals[-1]["eval_loss"] < 3.4 and evals[-1]["eval_perplexity"] == pytest.approx(
        np.exp(evals[-1]["eval_loss"]), rel=1e-6)
    assert result.reason == "completed" and result.final_step == cfg.steps
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    events = read_jsonl(tmp_path / "events.jsonl")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    # A save is recorded as saved only after it started and finished: every started save is
    # reported once, after its start, and the last one before the run ends.
    started = [(i, e["step"]) for i, e in enumerate(events) if e["kind"] == "checkpoint_started"]
    saved = {e["step"]: i for i, e in enumerate(events) if e["kind"] == "checkpoint_saved"}
    assert started and sorted(saved) == [s for _, s in started] and cfg.steps in saved
    assert all(saved[s] > i for i, s in started)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())[-1] == cfg.steps


def test_resume_after_interrupt_equals_uninterrupted(tmp_path):
    cfg = small(12)
    train(cfg, tmp_path / "straight")
    stopped = train(cfg, tmp_path / "resumed", stop_after=6)
    assert stopped.reason == "stop_after" and stopped.final_step == 6
    train(cfg, tmp_path / "resumed")
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert [s for s, _ in b] == list(range(1, 13))
    assert a == b  # bit-identical on CPU: same batches, same random numbers, same schedule
    kinds = [e["kind"] for e in read_jsonl(tmp_path / "resumed" / "events.jsonl")]
    assert kinds.count("resume") == 1 and kinds.count("run_end") == 2


def test_resume_drops_metrics_logged_after_the_last_checkpoint(tmp_path):
    cfg = small(6)
    train(cfg, tmp_path, stop_after=4)
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a crash after logging step 5, before saving it
        f.write(json.dumps({"step": 5, "loss": 123.0}) + "\n")
    train(cfg, tmp_path)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[4]["loss"] != 123.0
    resume = [e for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == "resume"][0]
    assert resume["superseded_rows"]["metrics.jsonl"] == 1 and resume["step"] == 4


@pytest.mark.parametrize("change, named", [
    (lambda c: dataclasses.replace(c, model=dataclasses.replace(c.model, d_model=128)), "model.d_model: 64 -> 128"),
    (lambda c: dataclasses.replace(c, optim=dataclasses.replace(c.optim, learning_rate=1e-2)), "optim.learning_rate"),
    (lambda c: dataclasses.replace(c, seed=7), "seed: 0 -> 7"),
    (lambda c: dataclasses.replace(c, global_batch=16), "global_batch: 8 -> 16"),
    (lambda c: dataclasses.replace(c, grad_comm=dataclasses.replace(c.grad_comm, scheme="int8")), "grad_comm.scheme"),
])
def test_resume_with_other_fixed_settings_is_refused_and_changes_nothing(tmp_path, change, named):
    from holo_jax.errors import HoloError

    train(small(2), tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(HoloError, match="holds a run with other settings") as err:
        train(change(small(4)), tmp_path)
    assert named in str(err.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_extending_a_run_is_recorded_in_the_config_history(tmp_path):
    train(small(4), tmp_path)
    original = json.loads((tmp_path / "config.json").read_text())
    train(small(6), tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["config"] == original["config"] and record["config"]["steps"] == 4  # never overwritten
    assert record["history"][-1]["changes"] == {"steps": [4, 6]} and record["history"][-1]["resumed_at_step"] == 4
    changed = [e for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == "config_changed"]
    assert changed and changed[0]["changes"] == {"steps": [4, 6]}
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 7))
    train(small(6), tmp_path)  # resuming with the extended length again is no change
    assert len(json.loads((tmp_path / "config.json").read_text())["history"]) == 1


def test_restart_after_a_crash_before_the_first_checkpoint_does_not_duplicate_rows(tmp_path):
    cfg = small(6)
    with open(tmp_path / "metrics.jsonl", "w") as f:  # what a run killed at step 3, before any checkpoint, left
        f.writelines(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3))
    train(cfg, tmp_path)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(r["loss"] != 9.0 for r in rows)


def test_resume_survives_lines_torn_by_a_crash(tmp_path):
    cfg = small(6)
    train(cfg, tmp_path, stop_after=4)
    for name in ("metrics.jsonl", "events.jsonl"):
        with open(tmp_path / name, "a") as f:
            f.write('{"step": 5, "loss": 1.2')  # killed mid-write: no closing brace, no newline
    train(cfg, tmp_path)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    for name in ("metrics.jsonl", "events.jsonl"):
        assert '"loss": 1.2{' not in (tmp_path / name).read_text()  # the torn bytes were cut, not glued on
    resume = [e for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == "resume"][0]
    torn = len('{"step": 5, "loss": 1.2')
    assert resume["superseded_rows"]["metrics.jsonl:torn_bytes_cut"] == torn  # and the repair is on record
    assert resume["superseded_rows"]["events.jsonl:torn_bytes_cut"] == torn
    kinds = [e["kind"] for e in read_jsonl(tmp_path / "events.jsonl")]
    assert kinds.count("run_end") == 2 and "resume" in kinds


def test_a_sink_can_stop_the_run_cleanly_with_a_checkpoint_and_a_rerun_resumes(tmp_path):
    from holo_jax.train.sinks import Sink

    class StopAtLoss(Sink):
        """Asks for a stop once a logged step reaches `step` (a drift alarm or a policy gate would)."""

        def __init__(self, step):
            self.step, self.seen = step, []

        def metrics(self, step, row):
            self.seen.append(step)

        def stop_reason(self):
            return "test_gate" if self.seen and self.seen[-1] >= self.step else None

    cfg = small(12)
    result = train(cfg, tmp_path, sinks=[StopAtLoss(3)])
    # Step 3's row is read back while step 4 runs, so the stop lands at the boundary after step 4.
    assert result.reason == "test_gate" and result.stopped_early and result.final_step == 4
    assert 4 in [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    events = read_jsonl(tmp_path / "events.jsonl")
    requested = [e for e in events if e["kind"] == "stop_requested"]
    assert [(e["step"], e["reason"]) for e in requested] == [(3, "test_gate")]
    assert [e["reason"] for e in events if e["kind"] == "run_end"] == ["test_gate"]
    assert any(e["kind"] == "stopped_on_request" for e in events)
    assert train(cfg, tmp_path).final_step == 12  # without the sink, the same command resumes
    assert [s for s, _ in losses(tmp_path)] == list(range(1, 13))
