"""The preemption guard: first signal asks for a clean stop, a second Ctrl-C stops at once, and
multi-process flags are compared at the same steps on every process."""
import os
import signal

import numpy as np
import pytest

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


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_processes_compare_flags_at_most_sync_seconds_apart():
    """The comparison cadence follows the slowest process's step time, the same on every process."""
    clock, calls = FakeClock(), []

    def gather(row):  # this process and another, twice as slow, with a signal from the 4th comparison on
        calls.append(clock.now)
        other_flag = 1.0 if len(calls) >= 4 else 0.0
        return np.array([row, [other_flag, 2 * row[1]]])

    guard = PreemptionGuard(sync_seconds=5.0, gather=gather, clock=clock)
    answers = []
    for _ in range(12):
        clock.now += 0.5  # 0.5 s per step here, 1 s on the other process
        answers.append(guard.stop_requested())
    # First call compares (cadence unknown); then every 5 s / 1 s = 5 calls.
    assert calls == [0.5, 3.0, 5.5]
    assert guard.sync_every == 5 and not any(answers)
    for _ in range(4):
        clock.now += 0.5
        answers.append(guard.stop_requested())
    # Acted on at the next comparison (t = 8.0 s, 2.5 s after the previous one).
    assert answers[-1] and not any(answers[:-1]) and calls[-1] == 8.0


def test_slow_steps_are_compared_every_step():
    clock = FakeClock()
    guard = PreemptionGuard(sync_seconds=5.0, gather=lambda row: np.array([row]), clock=clock)
    for _ in range(3):
        clock.now += 8.0  # a step slower than the sync interval: compare at every step
        guard.stop_requested()
        assert guard.sync_every == 1
