"""Offline drift scoring: a reference set and a stream of files through a run's model, in windows.

What a sequence is: the files' documents (a `.txt` file is one document, a `.jsonl` file one per
line, under `text_key`, as `data.source=files` reads them), tokenized in file order with an
end-of-document token after each and cut into rows of max_len + 1 tokens: the rows the trainer's
packing makes (inputs = row[:-1], targets = row[1:]). A leftover shorter than a row is dropped. A
window is `window` consecutive sequences of one file; a file's last partial window is dropped
(reported as `unused_sequences`), so every window's text comes from one `file`.

Features are those of the in-step drift stage (holo_jax.drift.features), computed by one jitted
forward of a fixed batch shape; the detector is calibrated on the reference alone
(holo_jax.drift.detectors.detector_from_sequences).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from holo_jax.data.local_files import _jsonl_documents, expand_paths, read_span
from holo_jax.drift.detectors import SequentialDetector, detector_from_sequences
from holo_jax.drift.features import FEATURES, init_feature_map, sequence_features
from holo_jax.drift.restore import RestoredRun
from holo_jax.errors import HoloError

SCORING_BATCH = 32


def read_texts(path: str, text_key: str = "text") -> list[str]:
    """The documents of one .txt/.jsonl file, in file order (every line, no hold-out split)."""
    if path.endswith(".jsonl"):
        size = os.path.getsize(path)
        return [json.loads(read_span(path, s, e - s, size))[text_key] for s, e, _ in _jsonl_documents(path, text_key)]
    try:
        with open(path, encoding="utf-8") as f:
            return [f.read()]
    except UnicodeDecodeError as e:
        raise HoloError(f"{path} is not valid UTF-8 (bad byte at offset {e.start}); re-encode it as UTF-8.") from None


def sequences_of(texts: Sequence[str], tokenizer, max_len: int) -> np.ndarray:
    """int32 [n, max_len + 1] packed rows of the texts (see the module docstring)."""
    parts = []
    for text in texts:
        ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
        if ids.size:
            parts.extend([ids, np.asarray([tokenizer.eos_id], np.int32)])
    stream = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    n = len(stream) // (max_len + 1)
    return stream[: n * (max_len + 1)].reshape(n, max_len + 1)


@dataclasses.dataclass
class SequenceScorer:
    """Per-sequence drift features of packed rows through a restored run's model."""

    run: RestoredRun
    num_features: int = 64
    bandwidth: float = 1.0
    buckets: int = 128
    seed: int = 0

    def __post_init__(self):
        d_model = self.run.model_cfg.d_model
        self.fmap = init_feature_map(jax.random.PRNGKey(self.seed), d_model, self.num_features)
        task, model, name = self.run.task, self.run.model, self.run.task.name

        def features(params, rows_bt):
            if name == "next_token_lm":
                batch = {"inputs": rows_bt[:, :-1], "targets": rows_bt[:, 1:]}
            else:
                batch = {"tokens": rows_bt[:, :-1],
                         "lengths": jax.numpy.full((rows_bt.shape[0],), rows_bt.shape[1] - 1, jax.numpy.int32)}
            outputs = task.apply(model, params, batch, deterministic=True)
            return sequence_features(name, outputs, batch, self.fmap, self.bandwidth, self.buckets)[0]

        self._features = jax.jit(features)

    def __call__(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """{feature: float64 [n, k]} for rows [n, max_len + 1]."""
        out = {t: [] for t in FEATURES}
        for start in range(0, len(rows), SCORING_BATCH):
            chunk = rows[start:start + SCORING_BATCH]
            padded = np.zeros((SCORING_BATCH, rows.shape[1]), np.int32)  # one shape: one compile
            padded[: len(chunk)] = chunk
            got = jax.device_get(self._features(self.run.params, padded))
            for t in FEATURES:
                out[t].append(np.asarray(got[t], np.float64)[: len(chunk)])
        width = {"embedding": self.num_features, "loss": 1, "tokens": self.buckets}
        return {t: np.concatenate(v) if v else np.zeros((0, width[t])) for t, v in out.items()}


def file_features(scorer: SequenceScorer, paths: Sequence[str], text_key: str = "text"
                  ) -> list[tuple[str, dict[str, np.ndarray]]]:
    """[(file, {feature: [n, k]})] for every file the paths name (globs expanded), in order."""
    out = []
    for path in expand_paths(paths):
        rows = sequences_of(read_texts(path, text_key), scorer.run.tokenizer, scorer.run.model_cfg.max_len)
        out.append((path, scorer(rows)))
    return out


def calibrate(reference: Sequence[tuple[str, dict[str, np.ndarray]]], window: int, false_alarm_rate: float,
              tests: Sequence[str] = FEATURES) -> SequentialDetector:
    features = {t: np.concatenate([f[t] for _, f in reference]) for t in tests}
    if len(features[tests[0]]) == 0:
        raise HoloError("the --reference files hold no complete sequence; give longer reference texts.")
    return detector_from_sequences(features, window, false_alarm_rate)


def score_stream(detector: SequentialDetector, stream: Sequence[tuple[str, dict[str, np.ndarray]]], window: int) -> dict:
    """The experiment's JSON: per-window results, the first alarm, the switch and what came before it.
    The stream's windows are one sequence (the detector's CUSUM runs on across file boundaries)."""
    placed, unused, file_starts, means = [], {}, [], {t: [] for t in detector.reference_mean}
    for path, feats in stream:
        n = len(next(iter(feats.values())))
        file_starts.append(len(placed))
        for w in range(n // window):
            placed.append({"index": len(placed), "file": path, "first_sequence": w * window})
            for t in means:
                means[t].append(feats[t][w * window:(w + 1) * window].mean(0))
        unused[path] = n % window
    results = detector.run({t: np.stack(v) for t, v in means.items()}) if placed else []
    windows = [{**where, **result} for where, result in zip(placed, results)]
    alarms = [w["index"] for w in windows if w["alarm"]]
    switch = file_starts[1] if len(file_starts) > 1 and file_starts[1] < len(windows) else None
    before = [i for i in alarms if switch is None or i < switch]
    after = [i for i in alarms if switch is not None and i >= switch]
    n_before = switch if switch is not None else len(windows)
    return {
        "windows": windows,
        "first_alarm_window": alarms[0] if alarms else None,
        "switch_window": switch,
        "false_alarms_before_switch": len(before),
        "windows_before_switch": n_before,
        "false_alarm_fraction_before_switch": len(before) / n_before if n_before else None,
        # 1 = the first window of the second file raised the alarm.
        "detection_delay_windows": (after[0] - switch + 1) if after else None,
        "unused_sequences": unused,
    }


def plot_windows(result: dict, path: str | Path, title: str = "") -> None:
    """The CUSUM statistic per window, the threshold and the switch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    stats = [w["statistic"] for w in result["windows"]]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(range(len(stats)), stats, marker=".", lw=1, label="CUSUM statistic")
    if result["windows"]:
        ax.axhline(result["windows"][0]["threshold"], color="red", ls="--", label="threshold h")
    if result.get("switch_window") is not None:
        ax.axvline(result["switch_window"] - 0.5, color="gray", ls=":", label="next stream file")
    alarms = [w["index"] for w in result["windows"] if w["alarm"]]
    ax.scatter(alarms, [stats[i] for i in alarms], color="red", s=12, zorder=3, label="alarm")
    ax.set_xlabel("window")
    ax.set_ylabel("statistic")
    ax.set_title(title or "drift statistic per window")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
