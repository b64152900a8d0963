"""SIGTERM/SIGINT -> "save and stop at the next step boundary", agreed by every process.

Schedulers preempt with SIGTERM (SLURM, Kubernetes) and users press Ctrl-C; either way the
loop must finish the step in flight, save, and exit cleanly. In a multi-process job the
processes must stop at the same step or the save's collectives hang, so the flag is OR-ed
across processes before it is acted on.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
import numpy as np


class PreemptionGuard:
    """`stop_requested()` is called once per step by every process. Multi-process, the processes
    compare flags only every `sync_every` calls: the all-gather waits for the step in flight, so
    doing it every step would take away the overlap of host work (next batch) with device work.
    Every process calls at the same steps, so they still agree on where to stop."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, sync_every: int = 10):
        self._requested = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}
        self.sync_every = max(1, sync_every)
        self._calls = 0

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._requested.is_set() and signum == signal.SIGINT:
            # A second Ctrl-C means "now": give up the graceful stop (the last finished
            # checkpoint is still on disk; orbax never leaves a half-written one looking complete).
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self._requested.set()

    def stop_requested(self) -> bool:
        """True on every process if any process got a signal (one tiny all-gather when multi-process)."""
        local = self._requested.is_set()
        if jax.process_count() == 1:
            return local
        self._calls += 1
        if self._calls % self.sync_every:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array([local], dtype=np.int32))
        return bool(np.any(flags))
