"""Drift monitoring: in-step statistics of what the model reads, windowed two-sample tests with
thresholds calibrated on a reference for a false-alarm rate, and the host sink that raises alarms.

  features   per-sequence features shared by the stage and offline scoring (RFF of pooled
             embeddings, per-sequence loss, hashed token histogram)
  stage      the `drift` stage kind: per-step sums of those features, emitted every step
  detectors  the window tests (MMD^2 via random features, loss, token distribution), conformal joint
             calibration for a per-window false-alarm rate
  sink       DriftSink: windows from emits, `drift_alarm` events, warn or stop with a checkpoint
  offline    `python -m experiments.drift`: reference and stream files through a run's model
  domains    text domains assembled from what every Python install ships, for measurements

Importing this package registers the stage kind `drift` (`--set stages=drift`). `train/` must not
import it (docs/DESIGN.md section 3); experiments/ wires it in.
"""
from holo_jax.drift.detectors import (
    WindowDetector, detector_from_sequences, detector_from_windows, joint_thresholds, min_reference_windows,
)
from holo_jax.drift.features import FEATURES, FeatureMap, init_feature_map, random_fourier_features, sequence_features
from holo_jax.drift.stage import DriftConfig, DriftStage
from holo_jax.drift.sink import ALARM_EVENT, STOP_REASON, DriftSink, drift_sinks

__all__ = [
    "ALARM_EVENT", "FEATURES", "STOP_REASON", "DriftConfig", "DriftSink", "DriftStage", "FeatureMap",
    "WindowDetector", "detector_from_sequences", "detector_from_windows", "drift_sinks", "init_feature_map",
    "joint_thresholds", "min_reference_windows", "random_fourier_features", "sequence_features",
]
