"""Windowed two-sample tests with thresholds calibrated on the reference for a false-alarm rate.

A window is a few sequences; each drift feature (holo_jax.drift.features) gives it one vector, the
mean of its sequences' vectors, and each test compares that mean with the reference's:

  embedding  MMD^2 with a Gaussian kernel on pooled embeddings (random Fourier features, so the
             in-step part is a sum);
  loss       the per-sequence loss;
  tokens     MMD^2 with a delta kernel on the token distribution.

Two detectors share these statistics:

`window_statistics` and `joint_thresholds` (the in-training sink, holo_jax.drift.sink), and
`detector_from_windows`: one window against the K windows before it, each
statistic the squared distance from the reference mean, thresholds conformal (Vovk et al. 2005;
the split-conformal quantile of Lei et al. 2018) and *joint*: with R[j, t] the rank of null
statistic j among the M of test t and m_j = max_t R[j, t], the cut r* is the
ceil((1 - alpha)(M + 1))-th smallest m_j, and test t's threshold is its r*-th smallest statistic.
A window whose statistics are exchangeable with the M null ones then alarms with probability at
most alpha. The sink's default null is the statistics the M previous windows had against their own
references, computed exactly as the new window's is (holo_jax.drift.sink); `detector_from_windows`
takes those of the reference windows left out one at a time (M = K), which understate a training
batch's: its rows continue documents that the reference windows share among themselves, so a
left-out reference window still has its documents in the others, and a new window does not.

`detector_from_sequences` (offline, `python -m experiments.drift`): a CUSUM over the stream's
windows of rank-normal scores of Mahalanobis window statistics, its threshold calibrated by a
block-bootstrap simulation on the reference (SequentialDetector explains why a single-window test
is not enough on real text).

For both, the expected run length without drift is ~1 / alpha windows (alpha = 0.005: ~200);
Cobb et al. 2021 calibrate Alibi Detect's online detectors for such an expected run time by
simulation too. Why not Alibi Detect itself: it is PyTorch/TensorFlow, runs beside the model on a
copy of its inputs and keeps the reference samples (its MMD goes out of memory past ~10k per set);
here the in-step part must be sums inside a jitted JAX step, and the host part is small linear
algebra on window means.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from holo_jax.errors import HoloError

Vectors = Mapping[str, np.ndarray]


def min_reference_windows(false_alarm_rate: float) -> int:
    """The fewest reference windows that can calibrate `false_alarm_rate`: ceil((1-a)(K+1)) <= K."""
    return max(1, math.ceil((1.0 - false_alarm_rate) / false_alarm_rate - 1e-9))


def squared_distances(window_means: Vectors, reference_mean: Vectors) -> dict[str, np.ndarray]:
    """{test: |window mean - reference mean|^2} over the last axis (works for one window or [K, k])."""
    return {t: np.sum((np.asarray(window_means[t], np.float64) - reference_mean[t]) ** 2, axis=-1)
            for t in reference_mean}


def joint_thresholds(null_statistics: Mapping[str, np.ndarray], false_alarm_rate: float) -> dict[str, float]:
    """Per-test thresholds such that a window exchangeable with the K reference windows whose
    statistics are `null_statistics` ({test: [K]}) exceeds any of them with probability <= alpha."""
    tests = sorted(null_statistics)
    stats_kt = np.stack([np.asarray(null_statistics[t], np.float64) for t in tests], axis=1)
    k = stats_kt.shape[0]
    cut = math.ceil((1.0 - false_alarm_rate) * (k + 1))
    if cut > k:
        raise HoloError(f"{k} reference windows cannot calibrate a false-alarm rate of {false_alarm_rate}: it needs "
                        f"at least {min_reference_windows(false_alarm_rate)}; give a larger reference (or a smaller "
                        f"window), or raise the false-alarm rate.")
    # Rank 1..K of each window's statistic within its test (ties share the highest rank).
    sorted_kt = np.sort(stats_kt, axis=0)
    ranks_kt = np.stack([np.searchsorted(sorted_kt[:, i], stats_kt[:, i], side="right") for i in range(len(tests))], 1)
    combined = np.sort(ranks_kt.max(axis=1))
    r_star = int(combined[cut - 1])
    return {t: float(sorted_kt[r_star - 1, i]) for i, t in enumerate(tests)}


@dataclasses.dataclass(frozen=True)
class WindowDetector:
    """Reference means and calibrated thresholds; `score` tests one window."""

    reference_mean: dict[str, np.ndarray]
    thresholds: dict[str, float]
    false_alarm_rate: float
    reference_windows: int  # K, the calibration windows
    scale: dict[str, np.ndarray] | None = None  # per-coordinate factors applied before distances

    @property
    def expected_run_length(self) -> float:
        """Windows until a false alarm, on average, for independent windows without drift."""
        return 1.0 / self.false_alarm_rate

    def score(self, window_means: Vectors) -> dict:
        """{statistic, threshold, alarm, tests: {test: {statistic, threshold, alarm}}}. `statistic` is
        the largest of the tests' statistic / threshold ratios, so `alarm` is `statistic > threshold`
        with threshold 1; each test's own figures are under `tests`."""
        distances = window_statistics(window_means, self.reference_mean,
                                      self.scale or {t: 1.0 for t in self.reference_mean})
        return scored(distances, self.thresholds)


def scored(statistics: Mapping[str, float], thresholds: Mapping[str, float]) -> dict:
    """{statistic, threshold, alarm, tests}: `statistic` is the largest statistic / threshold ratio
    among the tests, so `alarm` is `statistic > threshold` with threshold 1."""
    tests = {t: {"statistic": float(d), "threshold": float(thresholds[t]), "alarm": bool(d > thresholds[t])}
             for t, d in statistics.items()}
    ratio = max(_ratio(v["statistic"], v["threshold"]) for v in tests.values())
    return {"statistic": ratio, "threshold": 1.0, "alarm": any(v["alarm"] for v in tests.values()), "tests": tests}


def _ratio(statistic: float, threshold: float) -> float:
    if threshold > 0:
        return statistic / threshold
    return 0.0 if statistic <= 0 else math.inf


def window_reference(window_means: Vectors) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(mean, scale) of K reference windows: distances are taken after dividing each coordinate by
    its spread over the reference windows (a diagonal Mahalanobis distance), because raw squared
    distances are ruled by the few coordinates that vary most within a domain (the space
    character's share of a text), which say least about a change of domain."""
    k = len(next(iter(window_means.values())))
    if k < 2:
        raise HoloError("drift calibration needs at least 2 reference windows.")
    means = {t: np.asarray(v, np.float64) for t, v in window_means.items()}
    scale = {t: 1.0 / np.maximum(v.std(0), 1e-6 * max(float(np.abs(v).max()), 1e-12)) for t, v in means.items()}
    return {t: (v * scale[t]).mean(0) for t, v in means.items()}, scale


def window_statistics(window_means: Vectors, reference_mean: Vectors, scale: Vectors) -> dict[str, float]:
    """{test: scaled squared distance of one window's means from the reference mean}."""
    scaled = {t: np.asarray(window_means[t], np.float64) * scale[t] for t in reference_mean}
    return {t: float(d) for t, d in squared_distances(scaled, reference_mean).items()}


def detector_from_windows(window_means: Vectors, false_alarm_rate: float) -> WindowDetector:
    """Leave-one-out calibration: the K given windows are the reference (its mean and scale,
    `window_reference`); the new window's statistic is its distance from the reference mean, and
    each reference window's null statistic its distance from the mean of the other K - 1."""
    mean, scale = window_reference(window_means)
    k = len(next(iter(window_means.values())))
    scaled = {t: np.asarray(v, np.float64) * scale[t] for t, v in window_means.items()}
    null = {t: np.sum((v - (k * mean[t] - v) / (k - 1)) ** 2, axis=-1) for t, v in scaled.items()}
    return WindowDetector(mean, joint_thresholds(null, false_alarm_rate), false_alarm_rate, k, scale)


def contiguous_split(n: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices 0..n-1 cut into runs of `block` consecutive sequences, alternately assigned to a
    fit half and a calibration half (a trailing partial run is dropped): calibration windows are
    then consecutive sequences, like the windows of a stream (neighbouring sequences of one text
    are alike; random subsets would understate how much a stream's windows vary)."""
    runs = n // block
    blocks = np.arange(runs * block) // block
    return np.flatnonzero(blocks % 2 == 0), np.flatnonzero(blocks % 2 == 1)


def window_means_of(features: Vectors, rows: np.ndarray, window: int) -> dict[str, np.ndarray]:
    """{test: [len(rows) // window, k]}: means of consecutive groups of `window` of `rows`."""
    rows = np.asarray(rows)[: len(rows) // window * window]
    return {t: np.asarray(v, np.float64)[rows].reshape(-1, window, v.shape[1]).mean(1) for t, v in features.items()}


@dataclasses.dataclass(frozen=True)
class SequentialDetector:
    """Offline detector for a stream of windows: CUSUM (Page 1954) of rank-normal window scores.

    Why sequential: text is heterogeneous at the scale of a document, so one window of 8 sequences
    from the reference domain is often as far from the reference mean as a window of another
    domain (measured on the shipped domains: the 99th percentile of same-domain windows is ~10x the
    distance between two domains' means). A switch is *persistent*, a stationary outlier is not,
    and CUSUM accumulates exactly that evidence: S_w = max(0, S_(w-1) + z_w - allowance), an alarm
    when S_w > h, then S restarts at 0.

    Per test, the window statistic is the Mahalanobis distance of the window mean from the
    reference mean (covariance of the reference's window means, shrunk halfway to its scaled
    identity for stability with few windows: Ledoit & Wolf 2004's target); z_t is its normal score
    against the K calibration windows (`_normal_score`: ranks in the bulk, an exponential tail
    beyond, clipped at MAX_SCORE, so heavy tails cannot dominate), and z = max_t z_t.

    `h` is calibrated by simulation on the reference: streams of calibration windows drawn in runs
    of 16 consecutive ones (a moving-block bootstrap, so the correlation of neighbouring text is kept),
    each window's z taken against the calibration windows of the other blocks; h is the smallest
    value (to 0.01, by bisection) whose simulated alarm rate per window is at most `false_alarm_rate`."""

    reference_mean: dict[str, np.ndarray]
    precision: dict[str, np.ndarray]
    null_statistics: dict[str, np.ndarray]  # sorted, per test
    allowance: float
    h: float
    false_alarm_rate: float
    simulated_false_alarm_rate: float
    reference_windows: int

    @property
    def expected_run_length(self) -> float:
        return 1.0 / self.false_alarm_rate

    def statistics(self, window_means: Vectors) -> dict[str, np.ndarray]:
        out = {}
        for t, mu in self.reference_mean.items():
            d = np.atleast_2d(np.asarray(window_means[t], np.float64)) - mu
            out[t] = np.einsum("wi,ij,wj->w", d, self.precision[t], d)
        return out

    def normal_scores(self, statistics: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.max([_normal_score(statistics[t], self.null_statistics[t]) for t in self.reference_mean], axis=0)

    def run(self, window_means: Vectors) -> list[dict]:
        """Per window, in order: {statistic (CUSUM S), threshold (h), alarm, z, tests}."""
        stats = self.statistics(window_means)
        z = self.normal_scores(stats)
        out, s = [], 0.0
        for w in range(len(z)):
            s = max(0.0, s + float(z[w]) - self.allowance)
            alarm = s > self.h
            out.append({"statistic": s, "threshold": self.h, "alarm": alarm, "z": float(z[w]),
                        "tests": {t: {"statistic": float(stats[t][w]),
                                      "z": float(_normal_score(stats[t][w:w + 1], self.null_statistics[t])[0])}
                                  for t in stats}})
            if alarm:
                s = 0.0
        return out


MAX_SCORE = 8.0  # normal scores are clipped here (one window can add at most MAX_SCORE - allowance)


def _normal_score(values: np.ndarray, sorted_null: np.ndarray) -> np.ndarray:
    """Phi^-1 of each value's position in the null distribution: the rank (1 + #below) / (K + 2)
    inside the bulk, and beyond the top 10% of the null an exponential tail (peaks over threshold:
    the generalised Pareto tail with shape 0, which fits the chi-square-like tails of quadratic
    statistics; Pickands 1975), so a window far past every calibration window scores higher than
    one just past the largest: ranks alone would cap every window's evidence at Phi^-1((K+1)/(K+2))."""
    from scipy.stats import norm

    values = np.asarray(values, np.float64)
    k = len(sorted_null)
    m = max(5, math.ceil(0.1 * k))
    u = sorted_null[k - m]
    beta = max(float(np.mean(sorted_null[k - m:] - u)), 1e-12)
    below = np.searchsorted(sorted_null, values, side="left")
    upper = np.where(values > u, (m + 1) / (k + 2) * np.exp(-(values - u) / beta), (k + 1 - below) / (k + 2))
    return np.minimum(norm.isf(upper), MAX_SCORE)


def _cusum_alarms(z_rw: np.ndarray, allowance: float, h: float) -> int:
    """Alarms of CUSUM (restarting after each) over each row of z_rw, in total."""
    s = np.zeros(z_rw.shape[0])
    alarms = 0
    for w in range(z_rw.shape[1]):
        s = np.maximum(0.0, s + z_rw[:, w] - allowance)
        hit = s > h
        alarms += int(hit.sum())
        s[hit] = 0.0
    return alarms


def detector_from_sequences(features: Vectors, window: int, false_alarm_rate: float, *, block_windows: int = 4,
                            allowance: float = 1.0, shrinkage: float = 0.5, simulated_windows: int = 40_000, bootstrap_windows: int = 16,
                            seed: int = 0) -> SequentialDetector:
    """Calibrate on per-sequence reference features ({test: [n, k]}, in reading order): the fit half
    of a contiguous split (runs of `block_windows` windows) gives the means and covariances, the
    other half the calibration windows and the simulation (see SequentialDetector)."""
    n = len(next(iter(features.values())))
    fit, cal = contiguous_split(n, block_windows * window)
    fit_w, cal_w = window_means_of(features, fit, window), window_means_of(features, cal, window)
    k = len(cal_w[next(iter(cal_w))])
    blocks = k // block_windows
    if blocks < 8 or len(fit_w[next(iter(fit_w))]) < 8:
        need = 16 * block_windows * window
        raise HoloError(f"the reference gives {n} sequences, {k} calibration windows of {window}; calibration needs at "
                        f"least {need} sequences (32 runs of {block_windows} windows): give more or longer "
                        f"--reference files, or a smaller --window.")
    mean, precision, null = {}, {}, {}
    for t, x in fit_w.items():
        cov = np.atleast_2d(np.cov(x.T))
        target = np.eye(len(cov)) * max(np.trace(cov) / len(cov), 1e-12)
        precision[t] = np.linalg.inv((1.0 - shrinkage) * cov + shrinkage * target)
        mean[t] = x.mean(0)
    partial = SequentialDetector(mean, precision, {}, allowance, 0.0, false_alarm_rate, 0.0, k)
    stats = partial.statistics(cal_w)
    null = {t: np.sort(v) for t, v in stats.items()}
    # Leave-block-out z of every calibration window, then streams of whole bootstrap blocks.
    block_of = np.arange(k) // block_windows
    z = np.empty(blocks * block_windows)
    for i in range(blocks * block_windows):
        others = block_of != block_of[i]
        z[i] = max(_normal_score(stats[t][i:i + 1], np.sort(stats[t][others]))[0] for t in stats)
    # Circular moving-block bootstrap (Politis & Romano 1992) over the calibration windows in reading
    # order, in runs of `bootstrap_windows`: text stays alike well beyond one calibration block (a
    # document spans several), and CUSUM adds up exactly such runs, so shorter resampled runs would
    # understate how long a stationary stream can sit above its mean.
    rng = np.random.default_rng(seed)
    run = min(bootstrap_windows, len(z))
    length = 25 * run
    reps = max(1, simulated_windows // length)
    starts = rng.integers(0, len(z), (reps, length // run))
    streams = z[(starts[..., None] + np.arange(run)) % len(z)].reshape(reps, -1)
    # The alarm rate falls as h rises (a higher bar is crossed no more often): bisect to 0.01.
    lo, hi = 0.0, 50.0
    if _cusum_alarms(streams, allowance, hi) / streams.size > false_alarm_rate:
        raise HoloError(f"no CUSUM threshold below 50 keeps simulated false alarms under {false_alarm_rate} on this "
                        f"reference; raise --false-alarm-rate or give a larger reference.")
    while hi - lo > 0.01:
        mid = (lo + hi) / 2
        if _cusum_alarms(streams, allowance, mid) / streams.size <= false_alarm_rate:
            hi = mid
        else:
            lo = mid
    h = hi
    rate = _cusum_alarms(streams, allowance, h) / streams.size
    return SequentialDetector(mean, precision, null, allowance, h, false_alarm_rate, rate, k)
