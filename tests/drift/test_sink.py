"""DriftSink: windows from emits, alarms as events, warn or stop, exactly once across resume."""
from __future__ import annotations

import dataclasses

import numpy as np

from holo_jax.drift import ALARM_EVENT, DriftConfig, DriftSink
from holo_jax.train.jsonl import read_jsonl
from holo_jax.train.sinks import CompositeSink, EmittedJsonl, EventsJsonl

CFG = DriftConfig(window_steps=2, reference_windows=19, calibration_windows=19, warmup_windows=2, false_alarm_rate=0.05)


def _emits(steps=120, switch=100, seed=0):
    """Per-step sums of 8 sequences; the mean moves at `switch`."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(1, steps + 1):
        shift = 3.0 if step > switch else 0.0
        out.append((step, {"sums": {"embedding": (rng.normal(size=(8, 4)) + shift).sum(0),
                                    "loss": rng.normal(2.0, 0.1, (8, 1)).sum(0),
                                    "tokens": rng.dirichlet(np.ones(6), 8).sum(0)},
                           "count": 8.0}))
    return out


def _run(workdir, emits, cfg=CFG, start=0):
    drift = DriftSink(workdir, cfg)
    out = CompositeSink([EventsJsonl(workdir), EmittedJsonl(workdir, ["drift"]), drift])
    # The CompositeSink attaches its event API to the DriftSink (Sink.attach).
    out.rewind(start)
    for step, tree in emits:
        if step > start:
            out.emitted(step, "drift", tree)
    return out, drift


def test_windows_are_tested_against_the_windows_before_them_and_a_switch_alarms(tmp_path):
    out, drift = _run(tmp_path, _emits())
    out.close()
    rows = read_jsonl(tmp_path / "drift" / "drift.jsonl")
    # 60 windows of 2 steps; the first 2 are warm-up, the next 19 only fill the reference, and the 19
    # after them only give their statistics to the (prequential) calibration.
    assert [r["window"] for r in rows] == list(range(41, 61))
    assert set(rows[0]["tests"]) == {"embedding", "loss", "tokens"}
    assert all(r["step"] == 2 * r["window"] for r in rows)
    alarms = [e for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == ALARM_EVENT]
    # The first window after the switch alarms (at a 5% rate some earlier window may too).
    assert 102 in [a["step"] for a in alarms] and all(a["stage"] == "drift" for a in alarms)
    assert drift.stop_reason() is None  # action=warn


def test_action_stop_asks_the_loop_to_stop(tmp_path):
    cfg = dataclasses.replace(CFG, action="stop")
    out, drift = _run(tmp_path, _emits(steps=104), cfg)
    assert drift.stop_reason() == "drift_alarm"
    out.close()


def test_every_window_is_tested_and_every_alarm_raised_exactly_once_across_a_resume(tmp_path):
    emits = _emits()
    whole = tmp_path / "whole"
    out, _ = _run(whole, emits)
    out.close()
    # Crash after step 100 with the last checkpoint at step 84: the resumed run replays 85..120.
    broken = tmp_path / "broken"
    out, _ = _run(broken, emits[:100])
    out.close()
    out, drift = _run(broken, emits, start=84)
    out.close()
    assert read_jsonl(broken / "drift" / "drift.jsonl") == read_jsonl(whole / "drift" / "drift.jsonl")
    steps = lambda d: [e["step"] for e in read_jsonl(d / "events.jsonl") if e["kind"] == ALARM_EVENT]  # noqa: E731
    assert steps(broken) == steps(whole) and len(set(steps(broken))) == len(steps(broken))


def test_without_an_event_function_alarms_still_reach_events_jsonl(tmp_path):
    drift = DriftSink(tmp_path, CFG)
    drift.rewind(0)
    for step, tree in _emits(steps=110):
        drift.emitted(step, "drift", {"sums": {k: v.tolist() for k, v in tree["sums"].items()}, "count": 8.0})
    drift.close()
    kinds = [e["kind"] for e in read_jsonl(tmp_path / "events.jsonl")]
    assert ALARM_EVENT in kinds


def _document_stream_emits(rng, steps, rows=8, mean_len=12):
    """Per-step sums of `rows` row streams, each reading documents of random length (mean `mean_len`
    steps) whose features share a per-document offset: a training batch's rows continue documents
    that its neighbouring windows hold too, and a new document is new to every window before it."""
    offset = rng.normal(size=(rows, 4))
    left = rng.geometric(1 / mean_len, rows)
    out = []
    for step in range(1, steps + 1):
        ended = left == 0
        offset[ended] = rng.normal(size=(int(ended.sum()), 4))
        left[ended] = rng.geometric(1 / mean_len, int(ended.sum()))
        left -= 1
        x = offset + 0.3 * rng.normal(size=(rows, 4))
        out.append((step, {"sums": {"embedding": x.sum(0), "loss": x[:, :1].sum(0), "tokens": np.abs(x).sum(0)},
                           "count": float(rows)}))
    return out


def test_prequential_calibration_keeps_the_rate_on_document_streams_where_leave_one_out_does_not(tmp_path):
    """The null of the prequential calibration is made the way the tested statistic is; leaving one
    reference window out is not (the others still hold its documents), and alarms far above the rate."""
    # The calibration needs several times as many windows as the reference: consecutive statistics
    # share most of their reference, so they are alike over about as many windows as it holds.
    base = DriftConfig(window_steps=1, reference_windows=19, calibration_windows=100, warmup_windows=0,
                       false_alarm_rate=0.05)
    cfgs = {"leave_one_out": dataclasses.replace(base, calibration="leave_one_out"), "prequential": base}
    counted_from = max(c.first_tested_window for c in cfgs.values())  # the same windows for all
    rates = {}
    for name, cfg in cfgs.items():
        alarms = trials = 0
        for seed in range(4):
            drift = DriftSink(tmp_path / f"{name}{seed}", cfg, events=lambda *a, **k: None)
            for step, tree in _document_stream_emits(np.random.default_rng(seed), 2000):
                drift.emitted(step, "drift", tree)
            drift.close()
            tested = [r for r in drift.results if r["window"] >= counted_from]
            alarms += sum(r["alarm"] for r in tested)
            trials += len(tested)
        rates[name] = alarms / trials
    sigma = np.sqrt(0.05 * 0.95 / trials)
    assert rates["prequential"] <= 0.05 + 4 * sigma, rates
    assert rates["leave_one_out"] > 2 * 0.05, rates
