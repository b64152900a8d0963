"""The drift stage: per-step sums of the drift features, emitted to the host every step.

`--set stages=drift` adds it; the host side (holo_jax.drift.sink.DriftSink) groups `window_steps`
consecutive steps into a window and tests it. The stage adds no loss term and returns the features
as statistics only (auxiliary outputs of the loss, under stop_gradient), so the step's loss,
gradients and update are those of the run without it (tests/drift/test_stage.py checks bit for bit).

Why the window is summed on the host, not in the stage state: a step whose update is not finite
discards every new stage state (holo_jax.train.step), so a counter kept there falls behind the
step counter that decides when the loop reads emits, and windows would drift off their steps. One
emit per step is small (num_features + buckets + 2 floats) and is read back while the next step
runs; the data and the model's view of it are real even on a skipped step, so its sums count.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

import jax

from holo_jax.config import AtLeast, Above, InRange, StageConfig
from holo_jax.drift.features import FEATURES, FeatureMap, init_feature_map, sequence_features
from holo_jax.errors import HoloError
from holo_jax.train.stages import Stage, register_stage

PyTree = Any


@dataclasses.dataclass(frozen=True)
class DriftConfig(StageConfig):
    """`--set stages=drift --set stages.drift.window_steps=1 --set stages.drift.action=stop`."""

    kind = "drift"
    # Consecutive steps per tested window (each step: global_batch sequences).
    window_steps: Annotated[int, AtLeast(1)] = 1
    # Reference: the `reference_windows` windows just before the one tested (a sliding reference,
    # so the slow change of a model that is learning is not drift), after `warmup_windows`.
    reference_windows: Annotated[int, AtLeast(2)] = 100
    warmup_windows: Annotated[int, AtLeast(0)] = 20
    # How thresholds are calibrated (holo_jax.drift.sink). prequential: on the statistics that the
    # `calibration_windows` windows before had against their own references, so testing starts at
    # window warmup + reference + calibration + 1; leave_one_out: on the reference windows left
    # out one at a time, which alarms far above the rate on training batches (BENCHMARKS.md, issue 15).
    calibration: Literal["prequential", "leave_one_out"] = "prequential"
    calibration_windows: Annotated[int, AtLeast(1)] = 200
    # Per-window false-alarm rate the thresholds are calibrated for (expected run length 1/rate).
    false_alarm_rate: Annotated[float, InRange(0.0, 0.5)] = 0.01
    tests: tuple[str, ...] = FEATURES
    action: Literal["warn", "stop"] = "warn"
    num_features: Annotated[int, AtLeast(1)] = 64  # random Fourier features of the pooled embedding
    bandwidth: Annotated[float, Above(0.0)] = 1.0  # Gaussian kernel width on unit-length embeddings
    buckets: Annotated[int, AtLeast(1)] = 128  # hashed token-histogram buckets

    def check_relations(self, at: str) -> None:
        unknown = [t for t in self.tests if t not in FEATURES]
        if unknown or not self.tests:
            raise HoloError(f"{at}.tests must name some of {', '.join(FEATURES)}, got {', '.join(self.tests) or 'none'}.")
        if not 0.0 < self.false_alarm_rate:
            raise HoloError(f"{at}.false_alarm_rate must be above 0, got {self.false_alarm_rate}.")
        from holo_jax.drift.detectors import min_reference_windows

        need = min_reference_windows(self.false_alarm_rate)
        name = "calibration_windows" if self.calibration == "prequential" else "reference_windows"
        have = self.calibration_windows if self.calibration == "prequential" else self.reference_windows
        if have < need:
            raise HoloError(f"{at}.{name}={have} cannot calibrate {at}.false_alarm_rate={self.false_alarm_rate} "
                            f"({self.calibration} calibration): it needs at least {need} windows; raise {name} or "
                            f"the false-alarm rate.")

    @property
    def first_tested_window(self) -> int:
        """The first window the sink tests (1-based): after warm-up, reference and calibration."""
        calibration = self.calibration_windows if self.calibration == "prequential" else 0
        return self.warmup_windows + self.reference_windows + calibration + 1


def _d_model(params: PyTree) -> int:
    table = params["decoder"]["embedding"]
    return int(getattr(table, "value", table).shape[-1])


class DriftStage(Stage):
    def __init__(self, cfg: DriftConfig):
        self.cfg = cfg
        self.emit_every = 1
        self.task_name = "next_token_lm"

    def bind_task(self, task: Any) -> None:
        if task.name not in ("next_token_lm", "sequence_classification"):
            raise HoloError(f"the drift stage monitors next_token_lm and sequence_classification runs, not {task.name}.")
        self.task_name = task.name

    def init(self, key: jax.Array, params: PyTree) -> FeatureMap:
        return init_feature_map(key, _d_model(params), self.cfg.num_features)

    def loss(self, params, stage_state, batch, outputs, key):
        per_sequence, valid_b = sequence_features(self.task_name, outputs, batch, stage_state, self.cfg.bandwidth,
                                                  self.cfg.buckets)
        sums = {name: (v * valid_b[:, None]).sum(0) for name, v in per_sequence.items()}
        return {}, {"sums": sums, "count": valid_b.sum()}

    def emit(self, stage_state, stats):
        return {"sums": stats["sums"], "count": stats["count"]}


@register_stage(DriftConfig)
def make_drift_stage(cfg: DriftConfig) -> DriftStage:
    return DriftStage(cfg)
