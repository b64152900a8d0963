"""`python -m experiments.drift`: the command contract of DESIGN.md section 4 and its bad inputs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from experiments import drift as drift_cli


def _run(capsys, *argv):
    code = drift_cli.main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_a_switch_from_the_reference_domain_alarms_soon_after_and_not_before(tiny_lm, domain_files, tmp_path, capsys):
    plot = tmp_path / "stat.png"
    code, out = _run(capsys, "--checkpoint", str(tiny_lm), "--reference", domain_files["embedded_reference"],
                     "--stream", domain_files["embedded_stream"], domain_files["code_stream"],
                     "--window", "8", "--plot", str(plot), "--json")
    assert code == 0 and plot.stat().st_size > 0
    windows = out["windows"]
    assert {"file", "statistic", "threshold", "alarm"} <= set(windows[0])
    assert [w["file"] for w in windows[: out["switch_window"]]] == [domain_files["embedded_stream"]] * out["switch_window"]
    assert all(w["file"] == domain_files["code_stream"] for w in windows[out["switch_window"]:])
    assert all(w["alarm"] == (w["statistic"] > w["threshold"]) for w in windows)
    # The false-alarm *rate* is checked over many windows below and in test_detectors; one stream of
    # ~180 windows at a 1% rate has a 10% chance of 4 alarms, so this bound is looser.
    assert out["false_alarm_fraction_before_switch"] <= 0.03, out["false_alarm_fraction_before_switch"]
    assert out["detection_delay_windows"] is not None and out["detection_delay_windows"] <= 5, out["detection_delay_windows"]
    assert out["first_alarm_window"] == min(w["index"] for w in windows if w["alarm"])
    assert out["expected_run_length_windows"] == 200.0


# A known miss, pinned: strict, so the day it passes the marker must go (BENCHMARKS.md, drift section).
@pytest.mark.xfail(strict=True, reason="target missed on real text: with the 40-step tiny model, 7 false alarms in 552 "
                   "stationary windows (1.3%) at a calibrated 0.5%; BENCHMARKS.md, drift section")
def test_stationary_streams_raise_no_more_false_alarms_than_the_target(tiny_lm, domain_files, tmp_path, capsys):
    alarms = windows = 0
    for domain in ("embedded", "code", "licenses"):
        _, out = _run(capsys, "--checkpoint", str(tiny_lm), "--reference", domain_files[f"{domain}_reference"],
                      "--stream", domain_files[f"{domain}_stream"], "--json", "--plot", str(tmp_path / f"{domain}.png"))
        assert out["switch_window"] is None and out["detection_delay_windows"] is None
        alarms += out["false_alarms_before_switch"]
        windows += len(out["windows"])
    assert windows > 500 and alarms / windows <= 0.01, (alarms, windows)


@pytest.mark.parametrize("args,message", [
    (["--reference", "nope.txt", "--stream", "nope.txt"], "does not exist"),
    (["--window", "0"], "--window must be at least 1"),
    (["--false-alarm-rate", "0.9"], "--false-alarm-rate must be between"),
    (["--bench-overhead", "--repeats", "2"], "--repeats must be at least 3"),
])
def test_bad_input_gets_one_sentence_and_status_2(tiny_lm, domain_files, args, message):
    base = ["--checkpoint", str(tiny_lm), "--reference", domain_files["code_reference"],
            "--stream", domain_files["code_stream"]]
    proc = subprocess.run([sys.executable, "-m", "experiments.drift", *base, *args, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr


def test_a_directory_that_is_not_a_run_is_refused(tmp_path, domain_files):
    proc = subprocess.run([sys.executable, "-m", "experiments.drift", "--checkpoint", str(tmp_path), "--reference",
                           domain_files["code_reference"], "--stream", domain_files["code_stream"], "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a holo_jax run directory" in proc.stderr and "Traceback" not in proc.stderr


def test_a_classifier_workdir_is_scored_too(tmp_path, domain_files, capsys):
    import dataclasses

    from experiments.configs import pretrain as configs
    from holo_jax.config import LogConfig, TaskConfig
    from holo_jax.train.loop import train

    cfg = dataclasses.replace(configs.tiny(), steps=4, task=TaskConfig(kind="sequence_classification"),
                              log=LogConfig(eval_every_steps=0, tensorboard=False, progress_bar=False, plot=False))
    train(cfg, tmp_path / "cls")
    code, out = _run(capsys, "--checkpoint", str(tmp_path / "cls"), "--reference", domain_files["code_reference"],
                     "--stream", domain_files["code_stream"], "--plot", str(tmp_path / "cls.png"), "--json")
    assert code == 0 and out["windows"] and out["sequence_tokens"] == 64
    assert all(set(w["tests"]) == {"embedding", "loss", "tokens"} for w in out["windows"])


def test_the_overhead_bench_times_both_steps_and_reports_what_the_compiler_counts():
    out = drift_cli.bench_overhead("tiny", 3)
    assert len(out["step_seconds_without_all"]) == len(out["step_seconds_with_all"]) == 3
    assert out["overhead_ratio_of_medians"] == pytest.approx(out["step_seconds_with"] / out["step_seconds_without"] - 1)
    lo, hi = out["overhead_ratio_of_medians_95ci"]
    assert lo <= hi
    # The stage adds work (its features), and little of it next to the step's own, even at tiny size.
    assert 0 < out["compiled_flops_overhead"] < 0.05
    assert out["compiled_bytes_accessed_overhead"] > 0
    assert out["target_met"] == (out["overhead_ratio_of_medians"] <= 0.02)
