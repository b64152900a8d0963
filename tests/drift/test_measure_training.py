"""`--measure --protocol training`: the in-training monitor on the trainer's own batches."""
from __future__ import annotations

import numpy as np

from holo_jax.data.mixture import MixtureSource
from holo_jax.data.tokenizer import ByteTokenizer
from holo_jax.drift.measure_training import DocumentList, _all_second_from, first_second_window, trainer_windows


def _sources(seed=0):
    """Two sources whose texts share no byte ('a'-only and 'b'-only documents of random lengths), so a
    row's bytes say which component it read."""
    rng = np.random.default_rng(seed)
    first = DocumentList(["a" * int(n) for n in rng.integers(20, 400, 40)])
    second = DocumentList(["b" * int(n) for n in rng.integers(20, 400, 40)])
    return first, second


def test_the_switch_window_is_the_first_batch_with_a_row_of_the_second_source():
    tok = ByteTokenizer()
    pair = _sources()
    batch, switch = 8, 48
    rows, second = trainer_windows(MixtureSource(pair, switch_document=switch, seed=3), tok, seq_len=32,
                                   batch=batch, seed=3, windows=90, switch=switch)
    has_b = [(rows[w] == ord("b")).any() for w in range(len(rows))]
    assert second == has_b
    assert any(has_b) and not all(has_b)  # the case is not trivial
    first = has_b.index(True)
    assert first_second_window(pair, tok, seq_len=32, batch=batch, seed=3, switch=switch, limit=90) == first
    # From the first batch whose rows all read b on, no row holds an 'a' again.
    full = _all_second_from(MixtureSource(pair, switch_document=switch, seed=3), tok, 32, batch, 3, switch, 90)
    no_a = [not (rows[w] == ord("a")).any() for w in range(len(rows))]
    assert full is not None and no_a[full] and all(no_a[full:]) and not no_a[full - 1]


def test_trainer_windows_are_the_pipelines_batches_and_each_row_streams_documents():
    tok = ByteTokenizer()
    first, _ = _sources()
    rows, second = trainer_windows(first, tok, seq_len=32, batch=8, seed=0, windows=30)
    assert rows.shape == (30, 8, 33) and not any(second)
    # Row r of consecutive windows continues one token stream: the last token of a row's inputs is
    # followed by the next window's first token of that row (inputs/targets overlap by one token).
    from holo_jax.data.pipeline import PackedBatches

    pipe = PackedBatches(first, tok, seq_len=32, global_batch=8, seed=0)
    for w in range(30):
        got = next(pipe)
        np.testing.assert_array_equal(rows[w][:, :-1], got["inputs"])
        np.testing.assert_array_equal(rows[w][:, 1:], got["targets"])


def test_the_training_protocol_reports_every_pair_and_the_monitors_alarms(tiny_lm):
    from holo_jax.drift.measure_training import measure_training
    from holo_jax.drift.offline import SequenceScorer
    from holo_jax.drift.restore import load_run
    from holo_jax.drift.stage import DriftConfig

    out = measure_training(SequenceScorer(load_run(tiny_lm)), window=8, false_alarm_rate=0.01, seeds=1,
                           domains=("embedded", "code"), max_bytes=150_000, stationary_windows=30, after_windows=30)
    # Both calibrations on the same windows, counted from the prequential one's first test on.
    assert out["counted_from_window"] == DriftConfig().first_tested_window
    assert set(out["calibrations"]) == {"prequential", "leave_one_out"}
    for name, got in out["calibrations"].items():
        assert got["monitor"]["calibration"] == name and got["monitor"]["first_tested_window"] <= out["counted_from_window"]
        assert got["stationary_windows"] == 2 * 30
        assert set(got["delays_windows"]) == {"embedded->code", "code->embedded"}
        # Delays count from the first batch with text of the second domain (1 = it alarmed).
        d = got["delays_windows"]["embedded->code"][0]
        assert d is None or 1 <= d <= 30, (name, got)
        assert got["stationary_false_alarms"] == sum(v["false_alarms"] for v in got["stationary"].values())
    # Byte-level code after English prose: the leave-one-out monitor sees it within the 30 windows
    # (the prequential one, which keeps its false-alarm rate, does not with this tiny model).
    assert out["calibrations"]["leave_one_out"]["delays_windows"]["embedded->code"][0] is not None, out
    # Rows move on to the second domain one stream at a time: when all have (if within the budget), it
    # is at or after the first window that held any of it.
    full = out["windows_until_all_rows_switched"]["embedded->code"][0]
    assert full is None or full >= 1
