"""kill -9 at chosen and at random points of `python -m experiments.pretrain`, then the same command
again: the run must resume from the last checkpoint that is complete on disk and end with the logs
of an uninterrupted run, every step's row once, bit-identical (CPU, same config).

How a kill point is hit exactly: the test polls the run directory; when the condition holds it
freezes the child with SIGSTOP, waits until every thread is stopped, checks the condition again
on the frozen state and records it (finalized checkpoints, complete log rows), then sends SIGKILL.
What is on disk after the SIGKILL is what was recorded (a stopped process writes nothing more, and
the page cache survives a process kill), so each check below is against the exact state the kill
left, not a guess from timing. A point the run got past before the freeze is retried on a fresh
directory; only then is it a test failure.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from holo_jax.train.jsonl import read_jsonl

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STEPS, EVERY = 12, 4
EVAL_STEPS = (4, 8, 12)
# One device: the fastest tiny run on 2 cores. 50 eval batches make an evaluation long against a
# step (and the first one also compiles the eval step), so there is a window between a checkpoint
# being on disk and its evaluation row. Reference and crashed runs use exactly this command.
ARGS = ["--config", "tiny", "--steps", str(STEPS), "--set", f"checkpoint.every_steps={EVERY}",
        "--set", f"log.eval_every_steps={EVERY}", "--set", "log.eval_batches=50",
        "--set", "log.progress_bar=false", "--set", "log.tensorboard=false", "--set", "log.plot=false"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
# Differ between runs by nature (wall clock; the first row of each resumed stretch names the remat policy).
NONDETERMINISTIC = ("tokens_per_second", "remat_")
POLL_S = 0.003
RUN_TIMEOUT_S = 180
ATTEMPTS = 3


@dataclasses.dataclass
class Killed:
    """What a SIGKILL left on disk."""
    committed: list[int]  # finalized checkpoint steps (orbax renames a step's directory into place when complete)
    partial: list[str]    # orbax's temporary directories of saves in progress
    metrics: list[dict]   # complete rows of metrics.jsonl
    events: list[dict]    # complete events


def snapshot(workdir: Path) -> Killed:
    ckpts = workdir / "checkpoints"
    names = [p.name for p in ckpts.iterdir()] if ckpts.is_dir() else []
    return Killed(sorted(int(n) for n in names if n.isdigit()), sorted(n for n in names if "orbax-checkpoint-tmp" in n),
                  read_jsonl(workdir / "metrics.jsonl"), read_jsonl(workdir / "events.jsonl"))


def spawn(workdir: Path, log_name: str) -> subprocess.Popen:
    log = open(workdir.parent / f"{workdir.name}.{log_name}.log", "w")
    cmd = [sys.executable, "-m", "experiments.pretrain", "--workdir", str(workdir), *ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = Path(log.name)
    log.close()  # the child has its own copy of the descriptor
    return proc


def log_tail(proc) -> str:
    return proc.log_path.read_text(errors="replace")[-3000:]


def freeze(proc: subprocess.Popen) -> bool:
    """SIGSTOP and wait until every thread is stopped (a thread inside a write finishes it first)."""
    proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            states = [Path(f"/proc/{proc.pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[0]
                      for t in os.listdir(f"/proc/{proc.pid}/task")]
        except (FileNotFoundError, ProcessLookupError):
            return False  # exited meanwhile
        if all(s in "tTZX" for s in states):
            return True
        time.sleep(0.001)
    raise AssertionError(f"pid {proc.pid} did not stop within 5 s")


def kill_when(workdir: Path, condition: Callable[[Path], bool], give_up: Callable[[Path], bool] = lambda w: False,
              name: str = "killed") -> Killed | None:
    """Run the command; SIGKILL it at the first moment `condition(workdir)` holds. None if the run
    ended, or `give_up` said the point was passed, first."""
    proc = spawn(workdir, name)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while proc.poll() is None:
            if condition(workdir) and freeze(proc):
                if condition(workdir):  # still true on the frozen state: that is the state the kill leaves
                    state = snapshot(workdir)
                    proc.kill()
                    proc.wait()
                    return state
                proc.send_signal(signal.SIGCONT)
            if give_up(workdir):
                return None
            assert time.monotonic() < deadline, log_tail(proc)
            time.sleep(POLL_S)
        assert proc.returncode == 0, log_tail(proc)
        return None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def finish(workdir: Path) -> dict:
    proc = spawn(workdir, "final")
    assert proc.wait(timeout=RUN_TIMEOUT_S) == 0, log_tail(proc)
    return json.loads(proc.log_path.read_text().strip().splitlines()[-1])


def strict_jsonl(path: Path) -> list[dict]:
    """Every line complete and valid JSON: a torn line that was glued to the next record fails here
    (read_jsonl would skip it silently)."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path} ends in a torn line"
    return [json.loads(line) for line in data.splitlines()]


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(NONDETERMINISTIC)}


def layout(rows: list[dict]) -> list[tuple[int, str]]:
    return [(r["step"], "eval" if "eval_loss" in r else "train") for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and how long its phases take here (for the random kill times)."""
    workdir = tmp_path_factory.mktemp("crash") / "reference"
    workdir.mkdir()
    t0 = time.monotonic()
    proc = spawn(workdir, "run")
    first_row = None
    while proc.poll() is None:
        if first_row is None and read_jsonl(workdir / "metrics.jsonl"):
            first_row = time.monotonic() - t0
        time.sleep(0.01)
    assert proc.returncode == 0, log_tail(proc)
    total = time.monotonic() - t0
    rows = strict_jsonl(workdir / "metrics.jsonl")
    expected = [(s, "train") for s in range(1, STEPS + 1)]
    for s in reversed(EVAL_STEPS):
        expected.insert(expected.index((s, "train")) + 1, (s, "eval"))
    assert layout(rows) == expected  # each step once, its evaluation right after it
    return {"rows": rows, "first_row_s": first_row or total, "total_s": total, "dir": workdir.parent}


def workdir_for(reference, name: str) -> Path:
    path = reference["dir"] / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def kill_at(reference, name: str, condition, give_up) -> tuple[Path, Killed]:
    for attempt in range(ATTEMPTS):
        workdir = workdir_for(reference, f"{name}{attempt}")
        killed = kill_when(workdir, condition, give_up)
        if killed is not None:
            print(f"{name}: killed on attempt {attempt + 1}")
            return workdir, killed
    pytest.fail(f"the kill point `{name}` was passed before the run could be stopped, {ATTEMPTS} times")


def assert_recovered(workdir: Path, reference, kills: list[Killed]) -> None:
    """Finish the run with the same command, then: the logs equal the uninterrupted run's, and
    every restart resumed from the newest checkpoint complete at its kill."""
    result = finish(workdir)
    assert result["reason"] == "completed" and result["final_step"] == STEPS, result

    rows = strict_jsonl(workdir / "metrics.jsonl")
    assert layout(rows) == layout(reference["rows"])  # no step missing, none twice, evals in place
    for got, want in zip(rows, reference["rows"]):
        assert comparable(got) == comparable(want), (got, want)  # bit-identical: same batches and keys

    events = strict_jsonl(workdir / "events.jsonl")
    kinds = [e["kind"] for e in events]
    assert "config_changed" not in kinds  # the same command is the same run
    assert events[-1]["kind"] == "run_end" and events[-1]["reason"] == "completed" and events[-1]["step"] == STEPS
    for k in kills:
        # The event log never claims a checkpoint that the kill found unfinished.
        claimed = {e["step"] for e in k.events if e["kind"] == "checkpoint_saved"}
        assert claimed <= set(k.committed), (claimed, k.committed, k.partial)
        # The run after this kill started from the newest complete checkpoint (or afresh), and
        # dropped exactly the rows logged after it.
        start = next(e for e in events[len(k.events):] if e["kind"] in ("run_start", "resume"))
        last_good = max(k.committed, default=0)
        assert start["kind"] == ("resume" if k.committed else "run_start"), (start, k.committed)
        if k.committed:
            assert start["step"] == last_good
        logged_after = sum(1 for r in k.metrics if r["step"] > last_good)
        assert start["superseded_rows"].get("metrics.jsonl", 0) == logged_after, (start, k.metrics)
    # Every checkpoint is recorded as saved, except one that was complete on disk when a kill cut
    # the run before it could log that: the resume from it is its record.
    saved = {e["step"] for e in events if e["kind"] == "checkpoint_saved"}
    resumed = {e["step"] for e in events if e["kind"] == "resume"}
    assert saved <= set(EVAL_STEPS) and saved | resumed == set(EVAL_STEPS), (saved, resumed)
    names = {p.name for p in (workdir / "checkpoints").iterdir()}
    assert names == {str(s) for s in EVAL_STEPS}, names  # a killed save's temporary directory is gone too


# ------------------------------------------------------------------------------ helpers for conditions


def has_checkpoint_entries(w: Path) -> bool:
    return (w / "checkpoints").is_dir() and any((w / "checkpoints").iterdir())


def saving(step: int) -> Callable[[Path], bool]:
    """The background part of step `step`'s save: `save()` has returned (checkpoint_started is
    logged) and orbax is still writing into its temporary directory."""
    def condition(w: Path) -> bool:
        ckpts = w / "checkpoints"
        return ckpts.is_dir() and not (ckpts / str(step)).exists() and any(
            p.name.startswith(f"{step}.orbax-checkpoint-tmp") for p in ckpts.iterdir()) and any(
            e["kind"] == "checkpoint_started" and e["step"] == step for e in read_jsonl(w / "events.jsonl"))
    return condition


def has_eval_row(w: Path, step: int) -> bool:
    return any(r["step"] == step and "eval_loss" in r for r in read_jsonl(w / "metrics.jsonl"))


# ------------------------------------------------------------------------------ the kill points


def test_kill_before_the_first_checkpoint(reference):
    workdir, killed = kill_at(
        reference, "before_first_checkpoint",
        lambda w: bool(read_jsonl(w / "metrics.jsonl")) and not has_checkpoint_entries(w),
        give_up=has_checkpoint_entries)
    assert killed.committed == [] and killed.metrics  # rows logged, nothing saved
    assert_recovered(workdir, reference, [killed])
    starts = [e for e in read_jsonl(workdir / "events.jsonl") if e["kind"] == "run_start"]
    assert len(starts) == 2 and starts[1]["superseded_rows"]["metrics.jsonl"] == len(killed.metrics)


@pytest.mark.parametrize("step", [4, 8])
def test_kill_during_an_async_checkpoint_save(reference, step):
    workdir, killed = kill_at(reference, f"saving_{step}_", saving(step),
                              give_up=lambda w: (w / "checkpoints" / str(step)).exists())
    assert killed.partial and step not in killed.committed
    assert killed.committed == [s for s in EVAL_STEPS if s < step]
    assert any(e["kind"] == "checkpoint_started" and e["step"] == step for e in killed.events)
    assert_recovered(workdir, reference, [killed])


def test_kill_during_an_evaluation_after_its_checkpoint(reference):
    """Step 4's checkpoint is on disk, its evaluation row is not: the restart resumes at step 4
    and runs that evaluation before training on (eval rows follow the checkpoint they belong to)."""
    workdir, killed = kill_at(reference, "evaluating_4_",
                              lambda w: (w / "checkpoints" / "4").is_dir() and not has_eval_row(w, 4),
                              give_up=lambda w: has_eval_row(w, 4))
    assert killed.committed == [4] and not any("eval_loss" in r for r in killed.metrics)
    assert max(r["step"] for r in killed.metrics) == 4  # evaluation runs before step 5 is logged
    assert_recovered(workdir, reference, [killed])
    resume = [e for e in read_jsonl(workdir / "events.jsonl") if e["kind"] == "resume"]
    assert [e["step"] for e in resume] == [4]


@pytest.mark.parametrize("seed", [20261202])
def test_kill_at_random_times(reference, seed):
    """Kills in a row on one run directory, each restart killed again: one during start-up
    (imports, compile, orbax's set-up) at a seeded time, then five at seeded points of the training
    that is left: once the restart has logged a seeded step after the one it resumed from. Progress,
    not wall time, picks the points, so every kill lands however loaded the machine is."""
    rng = random.Random(seed)
    workdir = workdir_for(reference, f"random_{seed}")
    kills: list[Killed] = []
    plan = [("startup", rng.uniform(0.0, reference["first_row_s"]))] + [("training", rng.random()) for _ in range(5)]
    for i, (phase, draw) in enumerate(plan):
        before = snapshot(workdir)
        resume_from = max(before.committed, default=0)
        if phase == "training" and resume_from >= STEPS - 1:
            break
        # A step strictly between the resumed one and the end: the kill comes after its row.
        kill_after = resume_from + 1 + int(draw * (STEPS - 1 - resume_from))
        marks: dict[str, float] = {}

        def due(w: Path) -> bool:
            if phase == "startup":
                now = time.monotonic()
                return now - marks.setdefault("since", now) >= draw
            # This run's start event is written after its rewind: only rows after it are its own.
            new_events = read_jsonl(w / "events.jsonl")[len(before.events):]
            return any(e["kind"] in ("run_start", "resume") for e in new_events) and any(
                r["step"] >= kill_after for r in read_jsonl(w / "metrics.jsonl"))

        killed = kill_when(workdir, due, name=f"kill{i}")
        if killed is not None:
            kills.append(killed)
        events = read_jsonl(workdir / "events.jsonl")
        if events and events[-1]["kind"] == "run_end" and events[-1]["step"] == STEPS:
            break  # the run completed before this kill was due
    assert len(kills) >= 3, f"only {len(kills)} of {len(plan)} random kills landed before the run completed"
    print(f"random kills landed: {len(kills)}; resumed from {[max(k.committed, default=0) for k in kills]}")
    assert_recovered(workdir, reference, kills)
