"""The host side of drift monitoring: windows from the stage's emits, tested, alarms as events.

`DriftSink` receives the drift stage's per-step sums (`Sink.emitted`), adds `window_steps` of them
into one window (window w holds steps (w-1) * window_steps + 1 .. w * window_steps), and after the
first `warmup_windows` tests each window against the `reference_windows` windows just before it
(the scaled distance of holo_jax.drift.detectors.window_statistics, one per test).

Thresholds (default, `calibration=prequential`): the joint conformal ones (detectors.
joint_thresholds) of the statistics that the `calibration_windows` windows before it had against
their own references. That null is made the way the tested statistic is: a batch whose rows
continue document pieces, against the windows just before it. The earlier default, calibrating on
the reference windows themselves left out one at a time (`calibration=leave_one_out`), understates
how new a batch looks: the other reference windows still hold the left-out one's documents, and
a new batch's documents are in none of them (measured: ~10% false alarms at a nominal 1%,
BENCHMARKS.md, issue 15). The prequential null's statistics are serially correlated (neighbouring
windows share most of their reference), which is why it needs about twice as many windows as the
reference holds to keep the rate.
Every tested window is a row of WORKDIR/drift/<stage>.jsonl; an alarm is a `drift_alarm` event,
and with `action=stop` the sink asks the loop to stop (`stop_reason`), which saves a checkpoint at
the next step boundary and returns with reason `drift_alarm`.

Exactly once across resume: on `rewind(step)` the window state is rebuilt by replaying
WORKDIR/emitted/<stage>.jsonl up to `step` (the loop's EmittedJsonl has already cut what came
later), windows tested after `step` are dropped from drift/<stage>.jsonl, and an alarm already in
events.jsonl for a window is not raised again when the resumed run re-tests it. Resuming a run that
stopped on a drift alarm accepts the change: warm-up, reference and calibration start again
after the stop.

Events: alarms go through the run's one event API (`CompositeSink.event`), which the CompositeSink
hands to each of its sinks (`Sink.attach`). A DriftSink used outside a CompositeSink (or given
nothing) appends its events to WORKDIR/events.jsonl itself, with a record of the same shape (time,
kind, host, fields), fsynced like the loop's.
"""
from __future__ import annotations

import collections
import socket
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from holo_jax.drift.detectors import (
    detector_from_windows, joint_thresholds, scored, window_reference, window_statistics,
)
from holo_jax.drift.stage import DriftConfig
from holo_jax.train.jsonl import JsonlFile, read_jsonl
from holo_jax.train.sinks import Sink

ALARM_EVENT = "drift_alarm"
STOP_REASON = "drift_alarm"


class DriftSink(Sink):
    def __init__(self, workdir: str | Path, cfg: DriftConfig, *, events: Callable[..., None] | None = None):
        self.workdir = Path(workdir)
        self.cfg = cfg
        self.stage = cfg.stage_name
        self.stages = (self.stage,)
        self._events = events
        self._events_file: JsonlFile | None = None
        self.windows = JsonlFile(self.workdir / "drift" / f"{self.stage}.jsonl")
        self._reset()

    # --- window bookkeeping ------------------------------------------------------------------
    def _reset(self) -> None:
        self._open: dict[str, np.ndarray] | None = None  # sums of the window being filled
        self._open_count = 0.0
        self._open_index = 0
        self._closed = 0  # windows completed so far
        self._history: collections.deque[dict[str, np.ndarray]] = collections.deque(maxlen=self.cfg.reference_windows)
        # Prequential null: earlier windows' statistics against the references they had.
        self._null: collections.deque[dict[str, float]] = collections.deque(maxlen=self.cfg.calibration_windows)
        self._alarmed_steps: set[int] = set()
        self._rebase_after: list[int] = []  # steps at which a run stopped on a drift alarm
        self._stop: str | None = None
        self.results: list[dict] = []

    def _add(self, step: int, tree: Any, *, live: bool) -> None:
        index = (int(step) - 1) // self.cfg.window_steps + 1
        if self._open is not None and index != self._open_index:
            self._open = None  # a window cut short (steps missing): never tested as if complete
        sums = {t: np.asarray(tree["sums"][t], np.float64) for t in self.cfg.tests}
        if self._open is None:
            self._open, self._open_count, self._open_index = sums, 0.0, index
        else:
            self._open = {t: self._open[t] + sums[t] for t in sums}
        self._open_count += float(tree["count"])
        if int(step) % self.cfg.window_steps == 0:
            self._close(int(step), live=live)

    def _close(self, step: int, *, live: bool) -> None:
        means = {t: v / max(self._open_count, 1.0) for t, v in self._open.items()}
        self._open = None
        if self._rebase_after and step > self._rebase_after[0]:
            # The run stopped on an alarm and was resumed: that is taken as accepting the new data,
            # so warm-up, reference and calibration start afresh after the stop (else every resume would stop
            # again at the next window, until the sliding reference had absorbed the change).
            while self._rebase_after and step > self._rebase_after[0]:
                self._rebase_after.pop(0)
            self._history.clear()
            self._null.clear()
            self._closed = 0
        self._closed += 1
        if self._closed <= self.cfg.warmup_windows:
            return
        if len(self._history) == self.cfg.reference_windows:
            self._test(step, means, live=live)
        self._history.append(means)

    def _test(self, step: int, means: dict[str, np.ndarray], *, live: bool) -> None:
        reference = {t: np.stack([h[t] for h in self._history]) for t in means}
        if self.cfg.calibration == "leave_one_out":
            result = detector_from_windows(reference, self.cfg.false_alarm_rate).score(means)
        else:
            statistics = window_statistics(means, *window_reference(reference))
            ready = len(self._null) == self.cfg.calibration_windows
            if ready:
                null = {t: np.array([n[t] for n in self._null]) for t in statistics}
                result = scored(statistics, joint_thresholds(null, self.cfg.false_alarm_rate))
            # Every window's statistics join the null of later windows, alarm or not: all are scored
            # alike, so the calibration stays exchangeable with what it tests (without drift).
            self._null.append(statistics)
            if not ready:
                return
        result = {"step": step, "window": self._closed, **result}
        self.results.append(result)
        if live:
            self.windows.append(result)
            if result["alarm"] and step not in self._alarmed_steps:
                self._alarmed_steps.add(step)
                self._event(ALARM_EVENT, step=step, stage=self.stage, window=self._closed,
                            statistic=result["statistic"], threshold=result["threshold"], tests=result["tests"],
                            false_alarm_rate=self.cfg.false_alarm_rate, action=self.cfg.action)
                if self.cfg.action == "stop":
                    self._stop = STOP_REASON

    def _event(self, kind: str, **fields: Any) -> None:
        if self._events is not None:
            self._events(kind, **fields)
            return
        if self._events_file is None:
            self._events_file = JsonlFile(self.workdir / "events.jsonl", sync_each=True)
        self._events_file.append({"time": time.time(), "kind": kind, "host": socket.gethostname(), **fields})

    def attach(self, events: Any) -> None:
        """The loop's CompositeSink hands over its one event API: alarms go through it, so every
        other sink (events.jsonl, the audit log) sees them."""
        self._events = events.event

    # --- the Sink interface ------------------------------------------------------------------
    def emitted(self, step, stage, tree):
        if stage == self.stage:
            self._add(step, tree, live=True)

    def rewind(self, step):
        self._reset()
        events = read_jsonl(self.workdir / "events.jsonl")
        self._rebase_after = sorted(int(e["step"]) for e in events if e.get("kind") == "stopped_on_request"
                                    and e.get("reason") == STOP_REASON and int(e.get("step", 0)) <= step)
        for row in read_jsonl(self.workdir / "emitted" / f"{self.stage}.jsonl"):
            if row.get("step", 0) <= step:
                self._add(row["step"], row["value"], live=False)
        self._alarmed_steps = {int(e["step"]) for e in events
                               if e.get("kind") == ALARM_EVENT and e.get("stage") == self.stage}
        return {f"drift/{self.stage}.jsonl": self.windows.truncate_after(step)}

    def stop_reason(self):
        return self._stop

    def sync(self):
        self.windows.sync()

    def close(self):
        self.windows.close()
        if self._events_file is not None:
            self._events_file.close()


def drift_sinks(cfg: Any, workdir: str | Path) -> list[DriftSink]:
    """One DriftSink per drift stage the run's config enables (for `train(..., sinks=...)`); only
    process 0 writes, as for the loop's own sinks."""
    import jax

    if jax.process_index() != 0:
        return []
    return [DriftSink(workdir, s) for s in cfg.stages if isinstance(s, DriftConfig)]
