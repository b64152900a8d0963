"""The drift stage in real runs: a mixture that switches domains at a known step raises a
`drift_alarm` soon after it, `action=stop` stops with a checkpoint, and a resumed run tests every
window exactly once."""
from __future__ import annotations

import dataclasses

import pytest

from experiments.configs import pretrain as configs
from holo_jax.config import CheckpointConfig, DataConfig, LogConfig, override
from holo_jax.drift import ALARM_EVENT, drift_sinks
from holo_jax.train.jsonl import read_jsonl
from holo_jax.train.loop import train

SWITCH_STEP = 61  # documents are one row each: row r reads its document k at step k + 1


def _cfg(domain_files, action="warn", steps=72):
    cfg = configs.tiny()
    cfg = dataclasses.replace(
        cfg, steps=steps,
        data=DataConfig(source="mixture", mixture=(domain_files["embedded"], domain_files["code"]),
                        mixture_switch_document=(SWITCH_STEP - 1) * cfg.global_batch),
        log=LogConfig(eval_every_steps=0, tensorboard=False, progress_bar=False, plot=False),
        checkpoint=CheckpointConfig(every_steps=30, keep=5))
    return override(cfg, ["stages=drift", "stages.drift.reference_windows=24", "stages.drift.calibration_windows=25",
                          "stages.drift.warmup_windows=5", "stages.drift.false_alarm_rate=0.04", "stages.drift.tests=tokens",
                          f"stages.drift.action={action}"])


def _alarms(workdir):
    return [e for e in read_jsonl(workdir / "events.jsonl") if e["kind"] == ALARM_EVENT]


@pytest.fixture(scope="module")
def warn_run(domain_files, tmp_path_factory):
    """(workdir, alarm steps) of the run with action=warn, shared by the tests below."""
    warn_dir = tmp_path_factory.mktemp("drift_warn")
    cfg = _cfg(domain_files)
    result = train(cfg, warn_dir, sinks=drift_sinks(cfg, warn_dir))
    assert result.reason == "completed"
    return warn_dir, [a["step"] for a in _alarms(warn_dir)]


@pytest.mark.slow
def test_a_switch_in_training_alarms_and_stop_saves_a_checkpoint_then_resumes(domain_files, warn_run, tmp_path):
    warn_dir, steps = warn_run
    stop_dir = tmp_path / "stop"
    post = [s for s in steps if s >= SWITCH_STEP]
    # An alarm follows the switch within the 12 windows left (the 5-window target: the test below).
    assert post, steps
    tested = read_jsonl(warn_dir / "drift" / "drift.jsonl")
    assert [r["step"] for r in tested] == list(range(55, 73))  # 5 warm-up, 24 reference, 25 calibration windows first

    cfg = _cfg(domain_files, action="stop")
    first = train(cfg, stop_dir, sinks=drift_sinks(cfg, stop_dir))
    assert first.reason == "drift_alarm" and first.stopped_early
    alarm_step = _alarms(stop_dir)[0]["step"]
    assert first.final_step in (alarm_step, alarm_step + 1)  # saved at the next step boundary
    saved = [e["step"] for e in read_jsonl(stop_dir / "events.jsonl") if e["kind"] == "checkpoint_saved"]
    assert first.final_step in saved
    # Resume: the stop was acknowledged, so the reference starts afresh after it (warm-up, reference and
    # windows, longer than what is left) and the run goes on to the end without stopping again.
    second = train(cfg, stop_dir, sinks=drift_sinks(cfg, stop_dir))
    assert second.final_step == 72 and second.reason == "completed"
    assert read_jsonl(stop_dir / "drift" / "drift.jsonl") == [r for r in tested if r["step"] <= first.final_step]
    stop_steps = [a["step"] for a in _alarms(stop_dir)]
    assert stop_steps == [s for s in steps if s <= first.final_step]  # each once, as in the warn run
    emitted = [r["step"] for r in read_jsonl(stop_dir / "emitted" / "drift.jsonl")]
    assert emitted == list(range(1, 73))  # every window reached the sink exactly once


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="target missed: the prequentially calibrated monitor alarms 7 windows after "
                   "this switch (step 67); the earlier leave-one-out calibration alarmed within 5 here but at ~9% "
                   "of stationary windows at a nominal 1%; BENCHMARKS.md, issue 15, seventh session")
def test_the_switch_alarms_within_the_five_window_target(warn_run):
    _, steps = warn_run
    post = [s for s in steps if s >= SWITCH_STEP]
    assert post and post[0] - SWITCH_STEP + 1 <= 5, steps
