"""experiments.bench_comm where slow links cannot be emulated: it says why, on stderr and in the
JSON, and still reports the loopback figures (a tiny all-reduce between 2 real processes)."""
import json
import os

from experiments import bench_comm


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
