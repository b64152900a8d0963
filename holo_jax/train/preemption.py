"""SIGTERM/SIGINT -> "save and stop at the next step boundary", agreed by every process.

Schedulers preempt with SIGTERM (SLURM, Kubernetes) and users press Ctrl-C; either way the
loop must finish the step in flight, save, and exit cleanly. In a multi-process job the
processes must stop at the same step or the save's collectives hang, so the flag is OR-ed
across processes before it is acted on.
"""
from __future__ import annotations

import signal
import threading
import time
from types import FrameType

import jax
import numpy as np


class PreemptionGuard:
    """`stop_requested()` is called once per step by every process.

    Multi-process, the processes compare flags with a tiny all-gather, which waits for the step in
    flight (doing it every step would take away the overlap of host work with device work). They
    compare every `k` calls, with `k` re-agreed at each comparison from the slowest process's
    measured seconds per call, so that comparisons are at most `sync_seconds` apart in wall time
    whatever the step time: a signal is acted on within about `sync_seconds` plus one step, which
    leaves a scheduler's grace period (SLURM and Kubernetes default to 30 s) to the save. Every
    process computes `k` from the same gathered figures, so they all compare at the same calls."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, sync_seconds: float = 5.0, *, gather=None, clock=time.monotonic):
        self._requested = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}
        self.sync_seconds = sync_seconds
        self._gather = gather  # (flag, seconds per call) -> [processes, 2]; default: process_allgather
        self._clock = clock
        self._every = 1  # compare on the first call: the step time is not known yet
        self._calls_since = 0
        self._last = clock()

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def request(self, reason: str) -> None:
        """Ask for the same clean stop a signal asks for (a sink's alarm or policy gate): the
        processes agree on it like on a signal, and `signal_name` says why."""
        if not self._requested.is_set():
            self.signal_name = reason
            self._requested.set()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._requested.is_set() and signum == signal.SIGINT:
            # A second Ctrl-C means "now": give up the graceful stop (the last finished
            # checkpoint is still on disk; orbax never leaves a half-written one looking complete).
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self._requested.set()

    @property
    def sync_every(self) -> int:
        """Calls until the next comparison (for tests and logs)."""
        return self._every

    def stop_requested(self) -> bool:
        """True on every process if any process got a signal."""
        local = self._requested.is_set()
        if self._gather is None and jax.process_count() == 1:
            return local
        self._calls_since += 1
        if self._calls_since < self._every:
            return False
        now = self._clock()
        per_call = (now - self._last) / self._calls_since
        self._calls_since, self._last = 0, now
        gathered = np.asarray((self._gather or _allgather)(np.array([float(local), per_call], np.float64)))
        slowest = float(gathered[:, 1].max())
        self._every = int(min(max(self.sync_seconds // slowest if slowest > 0 else 1, 1), 10_000))
        return bool(np.any(gathered[:, 0] > 0))


def _allgather(row: np.ndarray) -> np.ndarray:
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(row.astype(np.float32)).reshape(-1, 2)
