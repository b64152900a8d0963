"""experiments.bench_comm where slow links cannot be emulated: it says why, on stderr and in the
JSON, and still reports the loopback figures (a tiny all-reduce between 2 real processes)."""
import json
import os
from pathlib import Path

import pytest

from experiments import bench_comm
from holo_jax.errors import exit_on_user_error


def test_without_tc_only_loopback_is_reported_with_the_reason(monkeypatch, capsys):
    monkeypatch.setattr(bench_comm.shutil, "which", lambda name: None)
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # main() rewrites it; restore after
    assert bench_comm.main(["--json", "--parts", "allreduce", "--size", "4096", "--repeats", "1"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert list(result["allreduce_seconds"]) == ["loopback"]
    assert set(result["allreduce_seconds"]["loopback"]) == set(bench_comm.SCHEMES)
    assert set(result["allreduce_seconds_fresh_output"]["loopback"]) == set(bench_comm.SCHEMES)
    detail = result["allreduce_detail"]
    assert detail["skipped_links"] == {"10gbit": "`ip` or `tc` not found", "1gbit": "`ip` or `tc` not found"}
    assert "not found" in detail["link_emulation"]
    assert "reporting loopback only" in captured.err


def test_a_link_that_fails_midway_is_skipped_and_the_others_kept(monkeypatch, capsys):
    monkeypatch.setattr(bench_comm, "_link_emulation_problem", lambda: None)

    def fake_time(prefix, size, repeats, timeout):
        if prefix:  # inside a namespace: pretend the workers could not reach each other
            raise RuntimeError("all-reduce workers failed (exit 1): connection refused")
        return {mode: {s: {"median": 1.0, "samples": [1.0]} for s in bench_comm.SCHEMES} for mode in bench_comm.MODES}

    class NoNamespace:  # a namespace that "works" without root
        def __init__(self, rate):
            pass

        def __enter__(self):
            return ["ip", "netns", "exec", "fake"]

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(bench_comm, "_time_allreduce", fake_time)
    monkeypatch.setattr(bench_comm, "_shaped_namespace", NoNamespace)
    out = bench_comm.allreduce_seconds(1024, 1, ["loopback", "10gbit", "1gbit"])
    assert list(out["seconds"]) == ["loopback"]
    assert set(out["skipped_links"]) == {"10gbit", "1gbit"} and "connection refused" in out["skipped_links"]["1gbit"]
    assert "reporting loopback only" in capsys.readouterr().err


def test_a_convergence_run_stopped_early_is_one_sentence_and_exit_2(monkeypatch, capsys, tmp_path):
    """SIGTERM during the convergence part makes train() save and return early, as for a
    preemption; bench_comm must say so in one sentence (exit 2), not die on the missing eval row."""
    from holo_jax.train import loop

    calls = []

    def stopped_train(cfg, workdir, **kwargs):
        calls.append(Path(workdir).name)
        return loop.RunResult(5, True, "SIGTERM", None)

    # bench_comm imports `train` from holo_jax.train.loop inside final_loss, so patch it there.
    monkeypatch.setattr(loop, "train", stopped_train)
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # main() rewrites it; restore after
    # `main` is what `python -m experiments.bench_comm` runs; it must carry the one error handler
    # itself. Wrapping it again (as the entry point of another tool would) must change nothing.
    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(bench_comm.main)(
            ["--json", "--parts", "loss", "--steps", "7", "--out-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    assert "Traceback" not in captured.err
    assert "stopped early at step 5 of 7 (SIGTERM)" in errors[0] and "fp32" in errors[0], errors[0]
    assert calls == ["fp32"]  # the first run's early stop ends the part; no further runs are started
    assert captured.out == ""  # no partial JSON result that a script could mistake for figures
    assert not (tmp_path / "out").exists()  # nor a loss-curve plot of a cut-short run
