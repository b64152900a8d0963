"""Host sinks: where metrics rows, events and the arrays stages emit go, outside jit.

The loop talks to one `CompositeSink`; each sink takes what it wants (Levanter's Tracker /
CompositeTracker, with JitCallback-style emits: the pytree is computed inside the step, the I/O
happens here). Shipped:

  MetricsJsonl   WORKDIR/metrics.jsonl: one row per logged step (an evaluation adds a row for
                 its step, merged by `jsonl.read_metrics`)
  EventsJsonl    WORKDIR/events.jsonl: lifecycle events, each fsynced before `event` returns;
                 the governance audit log will be a sink of this same stream
  EmittedJsonl   WORKDIR/emitted/<stage>.jsonl: each stage's emitted windows, one row per step
  TensorBoard    WORKDIR/tensorboard/: numeric metrics as scalars, start-up decisions as text

A sink may ask the run to stop cleanly (a drift alarm, a policy gate): `stop_reason()` returns a
short reason once it wants the stop; the loop asks after handing over each step's rows and emits,
saves a checkpoint at the next step boundary, as for SIGTERM (every process agrees on the stop), and
returns with that reason.

Contract: `rewind(step)` is called once at start-up with the step the run resumes from (0 for a
fresh start); a sink keyed by step drops what it holds for later steps, so across crashes and
resumes every step's row and every emitted window reaches it exactly once. `sync()` is called
before each checkpoint: afterwards everything the checkpoint covers is durable.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from holo_jax.train.jsonl import JsonlFile, jsonable


class Sink:
    """Base with no-op methods; a sink overrides what it consumes. `stages`: the stage names whose
    emits it wants (None: all)."""

    stages: tuple[str, ...] | None = None

    def metrics(self, step: int, row: Mapping[str, Any]) -> None: ...

    def event(self, record: Mapping[str, Any]) -> None: ...

    def emitted(self, step: int, stage: str, tree: Any) -> None: ...

    def text(self, step: int, tag: str, body: str) -> None: ...

    def rewind(self, step: int) -> dict[str, int]:
        """Drop rows for steps after `step`; returns {what: rows dropped} for the resume event."""
        return {}

    def sync(self) -> None: ...

    def close(self) -> None: ...

    def stop_reason(self) -> str | None:
        """A reason (e.g. "drift_alarm") once this sink wants the run to stop cleanly; None otherwise."""
        return None

    def attach(self, events: "CompositeSink") -> None:
        """Called once with the loop's one event API, for a sink that reports events of its own (a
        policy gate's warnings); it calls `events.event(kind, ...)` outside its own `event()`."""


class MetricsJsonl(Sink):
    def __init__(self, workdir: Path):
        self.file = JsonlFile(Path(workdir) / "metrics.jsonl")

    def metrics(self, step, row):
        self.file.append({"step": int(step), **row})

    def rewind(self, step):
        return {"metrics.jsonl": self.file.truncate_after(step), **_repaired("metrics.jsonl", self.file)}

    def sync(self):
        self.file.sync()

    def close(self):
        self.file.close()


class EventsJsonl(Sink):
    """Append-only: events are the run's history (a resume is an event, not a rewind)."""

    def __init__(self, workdir: Path):
        self.file = JsonlFile(Path(workdir) / "events.jsonl", sync_each=True)

    def event(self, record):
        self.file.append(record)

    def rewind(self, step):
        return _repaired("events.jsonl", self.file)

    def close(self):
        self.file.close()


class EmittedJsonl(Sink):
    def __init__(self, workdir: Path, stages: Sequence[str]):
        self.directory = Path(workdir) / "emitted"
        self._files = {name: JsonlFile(self.directory / f"{name}.jsonl") for name in stages}

    def emitted(self, step, stage, tree):
        self._files[stage].append({"step": int(step), "value": tree})

    def rewind(self, step):
        dropped = {}
        for n, f in self._files.items():
            dropped.update({f"emitted/{n}.jsonl": f.truncate_after(step), **_repaired(f"emitted/{n}.jsonl", f)})
        return dropped

    def sync(self):
        for f in self._files.values():
            f.sync()

    def close(self):
        for f in self._files.values():
            f.close()


class TensorBoard(Sink):
    def __init__(self, workdir: Path):
        self._logdir = str(Path(workdir) / "tensorboard")
        self._writer = None

    def _open(self, purge_step: int | None = None):
        if self._writer is None:
            from tensorboardX import SummaryWriter  # lazy: only the primary process writes

            # purge_step: TensorBoard drops the points a crashed stretch logged after the resumed step.
            self._writer = SummaryWriter(self._logdir, purge_step=purge_step)
        return self._writer

    def rewind(self, step):
        self._open(purge_step=step + 1)
        return {}

    def metrics(self, step, row):
        writer = self._open()
        for k, v in row.items():
            if v in ("nan", "inf", "-inf"):  # the JSON spelling of a non-finite value: plot it as one
                v = float(v)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                writer.add_scalar(k, v, step)

    def text(self, step, tag, body):
        # TensorBoard renders text as markdown; indenting makes it a code block, so tables stay aligned.
        self._open().add_text(tag, "    " + body.replace("\n", "\n    "), step)

    def sync(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()


class CompositeSink(Sink):
    """Fans everything out; the loop's one handle. `event(kind, **fields)` is the one event API."""

    def __init__(self, sinks: Sequence[Sink]):
        self.sinks = list(sinks)
        for s in self.sinks:
            s.attach(self)

    def metrics(self, step, row):
        row = jsonable(row)
        for s in self.sinks:
            s.metrics(step, row)

    def event(self, kind: str, /, **fields: Any) -> None:  # type: ignore[override]
        record = jsonable({"time": time.time(), "kind": kind, "host": socket.gethostname(), **fields})
        for s in self.sinks:
            s.event(record)

    def emitted(self, step, stage, tree):
        tree = jsonable(tree)
        for s in self.sinks:
            if s.stages is None or stage in s.stages:
                s.emitted(step, stage, tree)

    def text(self, step, tag, body):
        for s in self.sinks:
            s.text(step, tag, body)

    def rewind(self, step):
        dropped: dict[str, int] = {}
        for s in self.sinks:
            dropped.update(s.rewind(step))
        return dropped

    def sync(self):
        for s in self.sinks:
            s.sync()

    def close(self):
        for s in self.sinks:
            s.close()

    def stop_reason(self):
        for s in self.sinks:
            reason = s.stop_reason()
            if reason:
                return reason
        return None


def _repaired(name: str, file: JsonlFile) -> dict[str, int]:
    """The torn bytes a crash left at the end of `file` and its opening cut off, if any (reported in
    the resume / run_start event, so the repair is on record)."""
    return {f"{name}:torn_bytes_cut": file.repaired_bytes} if file.repaired_bytes else {}
