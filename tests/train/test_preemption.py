"""The preemption guard: first signal asks for a clean stop, a second Ctrl-C stops at once, and
multi-process flags are compared at the same steps on every process."""
import os
import signal

import numpy as np
import pytest

from holo_jax.train import preemption
from holo_jax.train.preemption import PreemptionGuard


def test_first_signal_requests_a_stop_second_ctrl_c_interrupts():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job
    with PreemptionGuard() as guard:
        assert not guard.stop_requested()
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.stop_requested() and guard.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # a repeated SIGTERM keeps asking for the clean stop
        assert guard.stop_requested()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_processes_compare_flags_every_sync_every_steps(monkeypatch):
    gathers = []
    monkeypatch.setattr(preemption.jax, "process_count", lambda: 2)
    from jax.experimental import multihost_utils

    def fake_allgather(x):
        gathers.append(int(x[0]))
        return np.array([[x[0]], [1]])  # the other process got a signal

    monkeypatch.setattr(multihost_utils, "process_allgather", fake_allgather)
    guard = PreemptionGuard(sync_every=3)
    answers = [guard.stop_requested() for _ in range(6)]
    assert answers == [False, False, True, False, False, True] and len(gathers) == 2
