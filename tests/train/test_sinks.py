"""The one JSONL writer (holo_jax.train.jsonl) and the host sinks (holo_jax.train.sinks).

What a crash can leave behind is written here by hand, byte for byte (a torn last line, a line
without its newline, a torn multi-byte character, rows of steps that were never checkpointed),
and the writer must repair it the same way for every log: cut, report, never glue.
"""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from holo_jax.train import jsonl
from holo_jax.train.jsonl import JsonlFile, jsonable, read_jsonl, read_metrics
from holo_jax.train.sinks import CompositeSink, EmittedJsonl, EventsJsonl, MetricsJsonl, Sink, TensorBoard


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_rows(path: Path, rows, tail: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + tail)


# ------------------------------------------------------------------------------ torn tails


@pytest.mark.parametrize("tail", [
    b'{"step": 3, "loss": 1.2',        # killed mid-write: no closing brace, no newline
    b'{"step": 3, "loss": 1.25}',      # complete JSON but no newline: the write was cut before it
    b'{"step": 3, "note": "caf\xc3',   # cut inside a two-byte UTF-8 character
])
def test_a_torn_last_line_is_cut_on_open_and_reported(tmp_path, tail):
    path = tmp_path / "metrics.jsonl"
    write_rows(path, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}], tail)
    good = path.read_bytes()[: -len(tail)]
    f = JsonlFile(path)
    assert f.repaired_bytes == len(tail)
    assert path.read_bytes() == good  # cut on open, before anything is appended
    f.append({"step": 3, "loss": 1.0})
    f.close()
    # The next record starts on its own line: it is not glued to the torn bytes.
    assert lines(path)[-1] == b'{"step": 3, "loss": 1.0}\n'
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]


def test_a_file_that_is_one_torn_line_is_emptied(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"kind": "run_st')
    f = JsonlFile(path, sync_each=True)
    assert f.repaired_bytes == 16 and path.read_bytes() == b""
    f.append({"kind": "run_start"})
    f.close()
    assert read_jsonl(path) == [{"kind": "run_start"}]


def test_a_torn_tail_longer_than_the_scan_chunk_is_cut_at_the_right_newline(tmp_path):
    """The repair scans back for the last newline 64 KiB at a time: a torn record spanning
    several chunks must be cut at the newline before it, not at a chunk boundary."""
    path = tmp_path / "emitted.jsonl"
    tail = b'{"step": 2, "value": [' + b"0.125, " * 40_000  # ~280 KB, no newline
    write_rows(path, [{"step": 1, "value": [1.0]}], tail)
    f = JsonlFile(path)
    assert f.repaired_bytes == len(tail)
    assert path.read_bytes() == b'{"step": 1, "value": [1.0]}\n'
    f.close()


def test_an_intact_file_is_left_alone(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_rows(path, [{"step": 1}, {"step": 2}])
    before = path.read_bytes()
    f = JsonlFile(path)
    f.close()
    assert f.repaired_bytes == 0 and path.read_bytes() == before
    assert JsonlFile(tmp_path / "new" / "metrics.jsonl").repaired_bytes == 0  # missing file: created, nothing cut


def test_read_jsonl_skips_a_torn_tail_without_touching_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_rows(path, [{"step": 1}, {"step": 2}], b'{"step": 3, "lo')
    before = path.read_bytes()
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    assert path.read_bytes() == before  # a reader (plots, notebooks, a live run's monitor) never repairs
    assert read_jsonl(tmp_path / "absent.jsonl") == []


# ------------------------------------------------------------------------------ truncate_after


def test_truncate_after_keeps_rows_up_to_the_step_and_appends_to_the_new_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    f = JsonlFile(path)
    for s in range(1, 7):
        f.append({"step": s, "loss": float(s)})
        if s % 2 == 0:
            f.append({"step": s, "eval_loss": s / 2})  # an evaluation row of the same step
    assert f.truncate_after(4) == 3  # the rows of steps 5 and 6, and 6's eval row
    assert [(r["step"], "eval_loss" in r) for r in read_jsonl(path)] == [
        (1, False), (2, False), (2, True), (3, False), (4, False), (4, True)]  # 4's eval row is kept
    # The handle was reopened on the replacement: a resumed run's rows land in the file on disk,
    # not in the unlinked old inode.
    f.append({"step": 5, "loss": 50.0})
    f.close()
    assert read_jsonl(path)[-1] == {"step": 5, "loss": 50.0}
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_truncate_after_with_nothing_to_drop_does_not_rewrite(tmp_path):
    path = tmp_path / "metrics.jsonl"
    f = JsonlFile(path)
    f.append({"step": 1})
    inode = path.stat().st_ino
    assert f.truncate_after(1) == 0 and f.truncate_after(5) == 0
    assert path.stat().st_ino == inode
    f.close()


def test_truncate_after_is_atomic(tmp_path, monkeypatch):
    """Killed before the rename, the file is the old one, whole; never a half-written one."""
    path = tmp_path / "metrics.jsonl"
    f = JsonlFile(path)
    for s in range(1, 5):
        f.append({"step": s})
    f.sync()
    before = path.read_bytes()

    def crash(src, dst):
        # At this point the replacement must be complete and durable beside the original.
        assert read_jsonl(src) == [{"step": 1}, {"step": 2}]
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(jsonl.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        f.truncate_after(2)
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------ values


def test_non_finite_floats_become_strings_and_arrays_lists(tmp_path):
    row = {
        "loss": float("nan"), "grad_norm": np.float32("inf"), "lr": -math.inf,
        "hist": np.arange(3, dtype=np.int32), "pair": (1, 2.5), "finite": np.bool_(True),
        "nested": {"x": np.array([[0.5, np.nan]])}, "n": np.int64(7), "policy": "dots", "none": None,
        "path": Path("/tmp/x"),
    }
    expected = {
        "loss": "nan", "grad_norm": "inf", "lr": "-inf", "hist": [0, 1, 2], "pair": [1, 2.5], "finite": True,
        "nested": {"x": [[0.5, "nan"]]}, "n": 7, "policy": "dots", "none": None, "path": "/tmp/x",
    }
    out = jsonable(row)
    assert out == expected
    assert type(out["n"]) is int and type(out["finite"]) is bool  # numpy scalars become Python ones
    path = tmp_path / "m.jsonl"
    f = JsonlFile(path)
    f.append(row)  # strict JSON (allow_nan=False): would raise if a NaN got through
    f.close()
    assert read_jsonl(path) == [expected]
    assert b"NaN" not in path.read_bytes() and b"Infinity" not in path.read_bytes()


def test_jax_arrays_are_written_as_lists():
    import jax.numpy as jnp

    assert jsonable({"w": jnp.array([1.0, 2.0]), "s": jnp.float32(0.5)}) == {"w": [1.0, 2.0], "s": 0.5}


def test_read_metrics_merges_an_eval_row_into_its_steps_row(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_rows(path, [
        {"step": 1, "loss": 3.0},
        {"step": 2, "loss": 2.5, "learning_rate": 0.1},
        {"step": 2, "eval_loss": 2.7, "eval_perplexity": 14.9},  # written after step 2's checkpoint
        {"step": 3, "loss": 2.0},
    ])
    assert read_metrics(path) == [
        {"step": 1, "loss": 3.0},
        {"step": 2, "loss": 2.5, "learning_rate": 0.1, "eval_loss": 2.7, "eval_perplexity": 14.9},
        {"step": 3, "loss": 2.0},
    ]


# ------------------------------------------------------------------------------ sinks


class Recorder(Sink):
    def __init__(self, name, stages=None, dropped=None):
        self.name, self.stages, self.calls, self._dropped = name, stages, [], dropped or {}

    def metrics(self, step, row):
        self.calls.append(("metrics", step, row))

    def event(self, record):
        self.calls.append(("event", record["kind"]))

    def emitted(self, step, stage, tree):
        self.calls.append(("emitted", step, stage, tree))

    def text(self, step, tag, body):
        self.calls.append(("text", step, tag))

    def rewind(self, step):
        self.calls.append(("rewind", step))
        return self._dropped

    def sync(self):
        self.calls.append(("sync",))

    def close(self):
        self.calls.append(("close",))


def test_emits_are_routed_by_stage_name_everything_else_goes_to_all():
    every, only_a, only_b_c = Recorder("every"), Recorder("a", stages=("a",)), Recorder("bc", stages=("b", "c"))
    out = CompositeSink([every, only_a, only_b_c])
    out.emitted(3, "a", {"w": np.array([1.5])})
    out.emitted(3, "c", np.float32(2.0))
    out.emitted(4, "z", 1)  # a stage nobody but the catch-all asked for
    out.metrics(3, {"loss": np.float32(1.0)})
    out.text(1, "remat_plan", "table")
    out.event("resume", step=2)
    assert [c for c in every.calls if c[0] == "emitted"] == [
        ("emitted", 3, "a", {"w": [1.5]}), ("emitted", 3, "c", 2.0), ("emitted", 4, "z", 1)]
    assert [c for c in only_a.calls if c[0] == "emitted"] == [("emitted", 3, "a", {"w": [1.5]})]
    assert [c for c in only_b_c.calls if c[0] == "emitted"] == [("emitted", 3, "c", 2.0)]
    for sink in (every, only_a, only_b_c):  # stages filter emits only
        assert ("metrics", 3, {"loss": 1.0}) in sink.calls
        assert ("text", 1, "remat_plan") in sink.calls and ("event", "resume") in sink.calls


def test_rewind_sync_close_reach_every_sink_and_dropped_counts_merge():
    a, b = Recorder("a", dropped={"metrics.jsonl": 2}), Recorder("b", dropped={"emitted/x.jsonl": 1})
    out = CompositeSink([a, b, Recorder("no rows")])
    assert out.rewind(8) == {"metrics.jsonl": 2, "emitted/x.jsonl": 1}
    out.sync()
    out.close()
    for sink in out.sinks:
        assert [c for c in sink.calls] == [("rewind", 8), ("sync",), ("close",)]


def test_rewind_returns_dropped_rows_per_file_and_keeps_the_events(tmp_path):
    metrics, events, emitted = MetricsJsonl(tmp_path), EventsJsonl(tmp_path), EmittedJsonl(tmp_path, ["probe", "drift"])
    out = CompositeSink([metrics, events, emitted])
    out.event("run_start")
    for step in range(1, 7):
        out.metrics(step, {"loss": 1.0 / step})
        out.emitted(step, "probe", np.full(2, step))
        if step % 3 == 0:
            out.emitted(step, "drift", {"kl": np.float32(step)})
    assert out.rewind(4) == {"metrics.jsonl": 2, "emitted/probe.jsonl": 2, "emitted/drift.jsonl": 1}
    out.event("resume", step=4)
    assert out.rewind(4) == {"metrics.jsonl": 0, "emitted/probe.jsonl": 0, "emitted/drift.jsonl": 0}
    out.metrics(5, {"loss": 9.0})
    out.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert read_jsonl(tmp_path / "emitted" / "probe.jsonl")[-1] == {"step": 4, "value": [4, 4]}
    assert read_jsonl(tmp_path / "emitted" / "drift.jsonl") == [{"step": 3, "value": {"kl": 3.0}}]
    # The event log is history, not keyed by step: a rewind never drops from it.
    assert [e["kind"] for e in read_jsonl(tmp_path / "events.jsonl")] == ["run_start", "resume"]


def test_an_event_carries_time_kind_host_and_plain_json_fields(tmp_path):
    out = CompositeSink([EventsJsonl(tmp_path)])
    out.event("nonfinite_step_skipped", step=np.int32(3), grad_norm=float("inf"))
    out.close()
    [record] = read_jsonl(tmp_path / "events.jsonl")
    assert record["kind"] == "nonfinite_step_skipped" and record["step"] == 3 and record["grad_norm"] == "inf"
    assert isinstance(record["time"], float) and isinstance(record["host"], str) and record["host"]


def test_events_are_fsynced_as_written_metrics_at_sync(tmp_path, monkeypatch):
    """An event (checkpoint_saved, preempted) must survive a power cut the moment it is logged;
    metrics rows are fsynced before each checkpoint, not once per row."""
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(jsonl.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                       real_fsync(fd)))
    out = CompositeSink([MetricsJsonl(tmp_path), EventsJsonl(tmp_path)])
    out.event("checkpoint_saved", step=4)
    assert [Path(p).name for p in synced] == ["events.jsonl"]
    for step in range(1, 4):
        out.metrics(step, {"loss": 1.0})
    assert [Path(p).name for p in synced] == ["events.jsonl"]  # rows: flushed, not yet fsynced
    out.sync()
    assert "metrics.jsonl" in [Path(p).name for p in synced]
    out.close()


# ------------------------------------------------------------------------------ TensorBoard


def tensorboard_records(logdir: Path) -> list[tuple[int, str, object]]:
    """(step, tag, value) of every summary value in the event files, read back with
    TensorFlow's own reader (an independent check of the files tensorboardX writes)."""
    pytest.importorskip("tensorflow")
    from tensorflow.compat.v1.train import summary_iterator

    out = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in summary_iterator(str(path)):
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    out.append((event.step, value.tag, value.simple_value))
                elif kind == "tensor":
                    assert value.metadata.plugin_data.plugin_name == "text", value
                    out.append((event.step, value.tag, [s.decode() for s in value.tensor.string_val]))
                else:
                    out.append((event.step, value.tag, kind))
    return out


def test_tensorboard_gets_numbers_as_scalars_and_text_as_text(tmp_path):
    pytest.importorskip("tensorboardX")
    out = CompositeSink([TensorBoard(tmp_path)])
    out.text(1, "remat_plan", "policy  peak\nnone    12 MiB")
    out.metrics(1, {"loss": 2.5, "skipped_steps": 0, "finite": True, "remat_policy": "none", "hist": [1, 2]})
    out.metrics(2, {"loss": np.float32(2.25), "skipped_steps": np.int64(1)})
    out.metrics(2, {"eval_loss": 2.0})
    out.close()
    records = tensorboard_records(tmp_path / "tensorboard")
    scalars = {(step, tag): v for step, tag, v in records if isinstance(v, float)}
    assert scalars == {(1, "loss"): 2.5, (1, "skipped_steps"): 0.0, (2, "loss"): 2.25, (2, "skipped_steps"): 1.0,
                       (2, "eval_loss"): 2.0}
    texts = [(step, tag, v) for step, tag, v in records if isinstance(v, list)]
    # Indented four spaces: TensorBoard renders text as markdown, and a code block keeps the table aligned.
    assert texts == [(1, "remat_plan/text_summary", ["    policy  peak\n    none    12 MiB"])]
    tags = {tag for _, tag, _ in records}
    assert not tags & {"finite", "remat_policy", "hist"}  # bools, strings and lists are not plotted
    assert len(records) == len(scalars) + len(texts)  # nothing else (no histograms, no stray values)
