"""The in-training drift monitor measured on the trainer's own batches (`--measure --protocol training`).

The `blocks` and `segments` protocols (holo_jax.drift.measure) measure the offline detector, whose
windows are consecutive sequences of one file. Inside training the monitor sees something else: a
window is a global batch, row r of which comes from its own row stream of documents (holo_jax.data.
pipeline; g = r, r + B, ... of the shuffled document sequence), so one window of 8 sequences holds
pieces of up to 8 documents, and the monitor is the DriftSink's (each window against the
`reference_windows` windows just before it, joint conformal thresholds, calibrated prequentially or
leave-one-out; both are run on the same batches). This protocol measures that path with the shipped
code end to end, the model held fixed:

  - the batches are `PackedBatches` with global batch = `window` (one step = one window): of one
    domain alone (stationary), or of a `MixtureSource` that switches from domain A to domain B at
    virtual document S (switch), both shuffled per epoch by the seed as in training;
  - each batch's per-sequence features are those of the drift stage (holo_jax.drift.features,
    through `SequenceScorer`, the same function the stage runs), summed per window as the stage
    emits them, and handed to a `DriftSink` (warm-up, sliding reference, thresholds, alarms);
  - stationary: the alarms among `stationary_windows` tested windows of one domain;
  - switch A -> B: S is the smallest multiple of B whose first batch with a row of B comes
    `pre_windows` windows after the first counted one (the latest first tested window among the
    monitors compared); the delay counts windows from that first batch (1 = it alarmed), and
    `windows_until_all_rows_switched` says when every row had moved on.
The model does not learn here, so what the sliding reference is for (a model whose features move as it
trains) is not exercised; what is measured is how the monitor's windows and thresholds behave on text.
"""
from __future__ import annotations

import itertools
import statistics
import tempfile
from typing import Mapping, Sequence

import numpy as np

from holo_jax.data.mixture import MixtureSource
from holo_jax.data.pipeline import PackedBatches
from holo_jax.drift.detectors import min_reference_windows
from holo_jax.drift.domains import DOMAINS, domain_documents
from holo_jax.drift.features import FEATURES
from holo_jax.drift.offline import SequenceScorer
from holo_jax.drift.sink import DriftSink
from holo_jax.drift.stage import DriftConfig
from holo_jax.errors import HoloError


class DocumentList:
    """A random-access source over a list of texts (the pipeline shuffles it per epoch)."""

    def __init__(self, texts: Sequence[str]):
        self._texts = list(texts)

    def num_documents(self) -> int:
        return len(self._texts)

    def document(self, index: int) -> str:
        return self._texts[index]

    def __repr__(self) -> str:
        return f"DocumentList({len(self._texts)} documents)"


def _touched_second(before: dict, after: dict, batch: int, switch: int | None) -> bool:
    """Whether any row of the batch just read took tokens from a virtual document g >= switch."""
    if switch is None:
        return False
    for r, k0, k1, o1 in zip(after["row"], before["stream_doc"], after["stream_doc"], after["doc_offset"]):
        last = k1 if o1 > 0 else max(k0, k1 - 1)
        if last * batch + int(r) >= switch:
            return True
    return False


def trainer_windows(source, tokenizer, *, seq_len: int, batch: int, seed: int, windows: int,
                    switch: int | None = None) -> tuple[np.ndarray, list[bool]]:
    """(rows [windows, batch, seq_len + 1], per window: does it hold text of the second component)."""
    pipeline = PackedBatches(source, tokenizer, seq_len=seq_len, global_batch=batch, seed=seed)
    rows, second = [], []
    for _ in range(windows):
        before = pipeline.state()
        got = next(pipeline)
        rows.append(np.concatenate([got["inputs"], got["targets"][:, -1:]], axis=1))
        second.append(_touched_second(before, pipeline.state(), batch, switch))
    return np.stack(rows), second


def first_second_window(source_pair, tokenizer, *, seq_len: int, batch: int, seed: int, switch: int,
                        limit: int) -> int | None:
    """Index of the first batch holding text of the second component (None if not within `limit`)."""
    pipeline = PackedBatches(MixtureSource(source_pair, switch_document=switch, seed=seed), tokenizer,
                             seq_len=seq_len, global_batch=batch, seed=seed)
    for w in range(limit):
        before = pipeline.state()
        next(pipeline)
        if _touched_second(before, pipeline.state(), batch, switch):
            return w
    return None


class _CachedScorer:
    """SequenceScorer over windows of rows, scoring each distinct row once (a stationary stream and
    the pre-switch part of a mixture with the same seed read the same rows)."""

    def __init__(self, scorer: SequenceScorer):
        self.scorer = scorer
        self._cache: dict[bytes, dict[str, np.ndarray]] = {}

    def window_sums(self, rows_wbt: np.ndarray) -> list[dict]:
        flat = rows_wbt.reshape(-1, rows_wbt.shape[-1])
        keys = [r.tobytes() for r in flat]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            got = self.scorer(np.stack([np.frombuffer(k, np.int32) for k in missing]))
            for i, k in enumerate(missing):
                self._cache[k] = {t: got[t][i] for t in FEATURES}
        per_window = len(rows_wbt[0])
        out = []
        for w in range(len(rows_wbt)):
            feats = [self._cache[k] for k in keys[w * per_window:(w + 1) * per_window]]
            out.append({"sums": {t: np.sum([f[t] for f in feats], axis=0) for t in FEATURES},
                        "count": float(per_window)})
        return out


def _monitor(cfg: DriftConfig, emits: list[dict]) -> list[dict]:
    """The DriftSink's tested windows for per-step emits (window w = step w)."""
    with tempfile.TemporaryDirectory() as workdir:
        sink = DriftSink(workdir, cfg)
        for step, tree in enumerate(emits, start=1):
            sink.emitted(step, cfg.stage_name, tree)
        sink.close()
        return list(sink.results)


def monitor_configs(false_alarm_rate: float) -> dict[str, DriftConfig]:
    """The sink's default monitor, and the leave-one-out single-window one it replaced (BENCHMARKS.md,
    issue 15), each with enough windows for the rate."""
    need = min_reference_windows(false_alarm_rate)
    return {"prequential": DriftConfig(false_alarm_rate=false_alarm_rate,
                                       calibration_windows=max(DriftConfig.calibration_windows, need)),
            "leave_one_out": DriftConfig(false_alarm_rate=false_alarm_rate, calibration="leave_one_out",
                                         reference_windows=max(DriftConfig.reference_windows, need))}


def measure_training(scorer: SequenceScorer, *, window: int, false_alarm_rate: float, seeds: int,
                     domains: Sequence[str] = DOMAINS, max_bytes: int = 600_000, pre_windows: int = 10,
                     stationary_windows: int = 200, after_windows: int = 60,
                     configs: Mapping[str, DriftConfig] | None = None) -> dict:
    """The monitors of `configs` (by default `monitor_configs`, both calibrations) on the same
    batches: alarms are counted from the latest first tested window among them on, so their figures
    are over the same windows."""
    run = scorer.run
    seq_len = run.model_cfg.max_len
    cfgs = dict(configs) if configs is not None else monitor_configs(false_alarm_rate)
    start = max(c.first_tested_window for c in cfgs.values()) - 1  # windows before the first counted one
    sources = {name: DocumentList(domain_documents(name, max_bytes)) for name in domains}
    cached = _CachedScorer(scorer)
    pairs = [f"{a}->{b}" for a, b in itertools.permutations(domains, 2)]
    counts = {c: {"stationary": {n: {"windows": 0, "false_alarms": 0} for n in domains},
                  "delays": {k: [] for k in pairs}, "pre": {k: 0 for k in pairs}} for c in cfgs}
    until_all: dict[str, list] = {k: [] for k in pairs}
    for seed in range(seeds):
        for name in domains:
            rows, _ = trainer_windows(sources[name], run.tokenizer, seq_len=seq_len, batch=window, seed=seed,
                                      windows=start + stationary_windows)
            emits = cached.window_sums(rows)
            for c, cfg in cfgs.items():
                tested = [r for r in _monitor(cfg, emits) if r["window"] > start]
                counts[c]["stationary"][name]["windows"] += len(tested)
                counts[c]["stationary"][name]["false_alarms"] += sum(r["alarm"] for r in tested)
        for a, b in itertools.permutations(domains, 2):
            pair = (sources[a], sources[b])
            # The first batch with text of b moves later as S grows: the smallest S (a multiple of the
            # batch) that puts it at or past `want`, found by stepping S one document per stream.
            want = start + pre_windows
            switch = window
            while (first_second_window(pair, run.tokenizer, seq_len=seq_len, batch=window, seed=seed,
                                       switch=switch, limit=want) is not None):
                switch += window
            first = first_second_window(pair, run.tokenizer, seq_len=seq_len, batch=window, seed=seed,
                                        switch=switch, limit=100 * want)
            if first is None:
                raise HoloError(f"no batch holds text of `{b}` within {100 * want} windows of the switch from `{a}`.")
            mixture = MixtureSource(pair, switch_document=switch, seed=seed)
            rows, _ = trainer_windows(mixture, run.tokenizer, seq_len=seq_len, batch=window, seed=seed,
                                      windows=first + after_windows, switch=switch)
            emits = cached.window_sums(rows)
            for c, cfg in cfgs.items():
                # Sink windows are 1-based: window w is batch w - 1.
                tested = [r for r in _monitor(cfg, emits) if r["window"] > start]
                counts[c]["pre"][f"{a}->{b}"] += sum(r["alarm"] for r in tested if r["window"] - 1 < first)
                after = [r["window"] - 1 for r in tested if r["alarm"] and r["window"] - 1 >= first]
                counts[c]["delays"][f"{a}->{b}"].append(after[0] - first + 1 if after else None)
            # The first window whose rows all read b (every stream past its last document of a).
            full = _all_second_from(mixture, run.tokenizer, seq_len, window, seed, switch, first + after_windows)
            until_all[f"{a}->{b}"].append(full - first + 1 if full is not None else None)
    return {
        "checkpoint": str(run.workdir), "checkpoint_step": run.step, "task": run.task.name, "protocol": "training",
        "window_sequences": window, "sequence_tokens": seq_len, "false_alarm_rate": false_alarm_rate,
        "detector": "DriftSink (holo_jax.drift.sink), one window per step against the windows just before it",
        "counted_from_window": start + 1,
        "seeds": seeds, "domains": list(domains), "domain_documents": {n: s.num_documents() for n, s in sources.items()},
        "domain_max_bytes": max_bytes, "pre_switch_windows": pre_windows, "stationary_windows_per_run": stationary_windows,
        "windows_until_all_rows_switched": until_all,
        "calibrations": {c: _summary(cfgs[c], counts[c]) for c in cfgs},
        "targets": {"delay_at_most_windows": 5, "false_alarm_fraction_at_most": 0.01},
    }


def _summary(cfg: DriftConfig, counts: dict) -> dict:
    delays = counts["delays"]
    all_delays = [d for v in delays.values() for d in v]
    detected = [d for d in all_delays if d is not None]
    windows = sum(v["windows"] for v in counts["stationary"].values())
    alarms = sum(v["false_alarms"] for v in counts["stationary"].values())
    return {
        "monitor": {"calibration": cfg.calibration, "reference_windows": cfg.reference_windows,
                    "calibration_windows": cfg.calibration_windows if cfg.calibration == "prequential" else None,
                    "warmup_windows": cfg.warmup_windows, "first_tested_window": cfg.first_tested_window,
                    "tests": list(cfg.tests)},
        "delays_windows": delays,
        "median_delay_windows": {k: _median(v) for k, v in delays.items()},
        "max_delay_windows": max(detected) if len(detected) == len(all_delays) and detected else None,
        "missed_switches": len(all_delays) - len(detected), "switches": len(all_delays),
        "false_alarms_in_pre_switch_windows": counts["pre"],
        "stationary": {k: {**v, "fraction": v["false_alarms"] / v["windows"] if v["windows"] else None}
                       for k, v in counts["stationary"].items()},
        "stationary_windows": windows, "stationary_false_alarms": alarms,
        "stationary_false_alarm_fraction": alarms / windows if windows else None,
        "target_delay_met": bool(detected) and len(detected) == len(all_delays) and max(detected) <= 5,
        "target_false_alarms_met": windows > 0 and alarms / windows <= 0.01,
    }


def _all_second_from(mixture, tokenizer, seq_len: int, batch: int, seed: int, switch: int, limit: int) -> int | None:
    """Index of the first batch all of whose rows read only documents g >= switch."""
    pipeline = PackedBatches(mixture, tokenizer, seq_len=seq_len, global_batch=batch, seed=seed)
    for w in range(limit):
        before = pipeline.state()
        next(pipeline)
        if all(int(k) * batch + int(r) >= switch for k, r in zip(before["stream_doc"], before["row"])):
            return w
    return None


def _median(values):
    got = [v for v in values if v is not None]
    return statistics.median(got) if len(got) == len(values) and got else None
