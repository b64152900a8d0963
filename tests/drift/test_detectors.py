"""The window tests: false alarms at the calibrated rate on stationary streams (many windows and
seeds), alarms soon after a persistent shift, and refusal of references too small to calibrate."""
from __future__ import annotations

import numpy as np
import pytest

from holo_jax.drift.detectors import (
    detector_from_sequences, detector_from_windows, joint_thresholds, min_reference_windows, window_means_of,
)
from holo_jax.errors import HoloError


def _topic_stream(rng, n, dims=(16, 1, 24), shift=0.0, topic_len=32):
    """Per-sequence features with document-level heterogeneity: each run of `topic_len` sequences
    shares a random topic offset (as neighbouring sequences of one text do), plus sequence noise."""
    out = {}
    for name, d in zip(("embedding", "loss", "tokens"), dims):
        topics = np.repeat(rng.normal(0, 0.7, (n // topic_len + 1, d)), topic_len, axis=0)[:n]
        out[name] = topics + rng.normal(0, 1.0, (n, d)) + shift
    return out


def test_joint_thresholds_keep_false_alarms_at_the_rate_over_many_seeds():
    alpha, k, alarms, trials = 0.05, 199, 0, 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        windows = {"a": rng.normal(size=(k + 40, 6)), "b": rng.standard_t(3, size=(k + 40, 1))}
        det = detector_from_windows({t: v[:k] for t, v in windows.items()}, alpha)
        for w in range(k, k + 40):
            alarms += det.score({t: v[w] for t, v in windows.items()})["alarm"]
            trials += 1
    rate = alarms / trials
    assert rate <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials) and rate > alpha / 4, rate


def test_joint_thresholds_are_per_test_order_statistics():
    null = {"x": np.arange(1.0, 101.0), "y": np.arange(1.0, 101.0)}  # perfectly correlated tests
    thresholds = joint_thresholds(null, 0.05)
    # ceil(0.95 * 101) = 96: with identical ranks, r* = 96 and each threshold its 96th value.
    assert thresholds == {"x": 96.0, "y": 96.0}


def test_sequential_detector_false_alarms_stay_under_one_percent_on_stationary_streams():
    window, alarms, windows = 8, 0, 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        det = detector_from_sequences(_topic_stream(rng, 6000), window, 0.005, seed=seed)
        stream = _topic_stream(rng, 8 * 400)
        results = det.run(window_means_of(stream, np.arange(len(stream["loss"])), window))
        alarms += sum(r["alarm"] for r in results)
        windows += len(results)
    assert alarms / windows <= 0.01, (alarms, windows)


def test_sequential_detector_alarms_within_five_windows_of_a_clear_shift():
    window, delays = 8, []
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        det = detector_from_sequences(_topic_stream(rng, 6000), window, 0.005, seed=seed)
        before, after = _topic_stream(rng, 8 * 10), _topic_stream(rng, 8 * 30, shift=1.5)
        stream = {t: np.concatenate([before[t], after[t]]) for t in before}
        results = det.run(window_means_of(stream, np.arange(len(stream["loss"])), window))
        post = [i for i, r in enumerate(results) if r["alarm"] and i >= 10]
        delays.append(post[0] - 10 + 1 if post else None)
    assert all(d is not None and d <= 5 for d in delays), delays
    # and the statistic is the CUSUM value, the threshold its calibrated h
    assert results[0]["threshold"] == det.h > 0


def test_a_reference_too_small_to_calibrate_is_refused_with_what_to_do():
    rng = np.random.default_rng(0)
    with pytest.raises(HoloError, match="calibration needs at least"):
        detector_from_sequences(_topic_stream(rng, 200), 8, 0.005)
    with pytest.raises(HoloError, match="cannot calibrate"):
        joint_thresholds({"a": np.ones(10)}, 0.01)
    assert min_reference_windows(0.01) == 99 and min_reference_windows(0.05) == 19
