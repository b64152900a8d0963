"""Measured figures of drift detection: delay after a switch and false alarms without one.

Protocol (`python -m experiments.drift --checkpoint DIR --measure --json`):
  - each domain (holo_jax.drift.domains) is packed once into sequences and scored once;
  - per seed, the domain's sequences are split into a reference and a held-out stream that never
    share a sequence and each keep contiguous text, by one of two protocols:
      `blocks` (the default, the recorded figure): blocks of 4 windows, a random half of them (in
        their order) the reference, the other half the stream; neighbouring blocks of one
        document then fall on both sides, so the stream shares documents with the reference;
      `segments`: 8 contiguous segments of the domain, a random 4 of them the reference, the
        others the stream; only the documents cut at a segment edge are shared, which is closer
        to what a user does (a reference file, then a stream file of the same kind of text);
  - stationary: every held-out window of domain A tested against A's reference (false alarms);
  - switch A -> B, for every ordered pair of distinct domains: `pre_windows` held-out windows of A,
    then B's held-out windows; the delay is the number of B windows up to and including the first
    alarm (1 = the first window after the switch), `null` if none of B's windows alarms.
Nothing is fitted to the domains: the detector's only inputs are the reference and its settings.
"""
from __future__ import annotations

import itertools
import statistics
from typing import Sequence

import numpy as np

from holo_jax.drift.domains import DOMAINS, domain_documents
from holo_jax.drift.offline import SequenceScorer, calibrate, score_stream, sequences_of

BLOCK_WINDOWS = 4
SEGMENTS = 8
PROTOCOLS = ("blocks", "segments")


def _split(n: int, window: int, rng: np.random.Generator, protocol: str = "blocks") -> tuple[np.ndarray, np.ndarray]:
    if protocol == "segments":
        edges = (np.arange(SEGMENTS + 1) * (n // window)) // SEGMENTS * window
        chosen = np.zeros(SEGMENTS, bool)
        chosen[rng.permutation(SEGMENTS)[: SEGMENTS // 2]] = True
        ref = np.concatenate([np.arange(edges[s], edges[s + 1]) for s in np.flatnonzero(chosen)])
        held = np.concatenate([np.arange(edges[s], edges[s + 1]) for s in np.flatnonzero(~chosen)])
        return ref, held
    block = BLOCK_WINDOWS * window
    blocks = np.arange(n // block)
    chosen = np.zeros(len(blocks), bool)
    chosen[rng.permutation(len(blocks))[: len(blocks) // 2]] = True
    ref = np.concatenate([np.arange(b * block, (b + 1) * block) for b in blocks[chosen]])
    held = np.concatenate([np.arange(b * block, (b + 1) * block) for b in blocks[~chosen]])
    return ref, held


def measure(scorer: SequenceScorer, *, window: int, false_alarm_rate: float, seeds: int,
            domains: Sequence[str] = DOMAINS, max_bytes: int = 600_000, pre_windows: int = 10,
            protocol: str = "blocks") -> dict:
    run = scorer.run
    features = {}
    for name in domains:
        rows = sequences_of(domain_documents(name, max_bytes), run.tokenizer, run.model_cfg.max_len)
        features[name] = scorer(rows)
    sizes = {name: int(len(f["loss"])) for name, f in features.items()}
    stationary = {name: {"windows": 0, "false_alarms": 0} for name in domains}
    delays: dict[str, list] = {f"{a}->{b}": [] for a, b in itertools.permutations(domains, 2)}
    pre_alarms = {k: 0 for k in delays}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        splits = {name: _split(sizes[name], window, rng, protocol) for name in domains}
        take = lambda name, idx: {t: v[idx] for t, v in features[name].items()}  # noqa: E731
        detectors = {name: calibrate([(name, take(name, splits[name][0]))], window, false_alarm_rate)
                     for name in domains}
        for name in domains:
            result = score_stream(detectors[name], [(name, take(name, splits[name][1]))], window)
            stationary[name]["windows"] += len(result["windows"])
            stationary[name]["false_alarms"] += result["false_alarms_before_switch"]
        for a, b in itertools.permutations(domains, 2):
            pre = splits[a][1][: pre_windows * window]
            result = score_stream(detectors[a], [(a, take(a, pre)), (b, take(b, splits[b][1]))], window)
            delays[f"{a}->{b}"].append(result["detection_delay_windows"])
            pre_alarms[f"{a}->{b}"] += result["false_alarms_before_switch"]
    all_delays = [d for v in delays.values() for d in v]
    detected = [d for d in all_delays if d is not None]
    windows = sum(v["windows"] for v in stationary.values())
    alarms = sum(v["false_alarms"] for v in stationary.values())
    return {
        "checkpoint": str(run.workdir), "checkpoint_step": run.step, "task": run.task.name,
        "window_sequences": window, "sequence_tokens": run.model_cfg.max_len, "false_alarm_rate": false_alarm_rate,
        "expected_run_length_windows": 1.0 / false_alarm_rate, "seeds": seeds, "protocol": protocol, "domains": list(domains),
        "domain_sequences": sizes, "domain_max_bytes": max_bytes, "pre_switch_windows": pre_windows,
        "delays_windows": delays,
        "median_delay_windows": {k: _median(v) for k, v in delays.items()},
        "max_delay_windows": max(detected) if len(detected) == len(all_delays) and detected else None,
        "missed_switches": len(all_delays) - len(detected),
        "switches": len(all_delays),
        "false_alarms_in_pre_switch_windows": pre_alarms,
        "stationary": {k: {**v, "fraction": v["false_alarms"] / v["windows"] if v["windows"] else None}
                       for k, v in stationary.items()},
        "stationary_windows": windows, "stationary_false_alarms": alarms,
        "stationary_false_alarm_fraction": alarms / windows if windows else None,
        "targets": {"delay_at_most_windows": 5, "false_alarm_fraction_at_most": 0.01},
        "target_delay_met": bool(detected) and len(detected) == len(all_delays) and max(detected) <= 5,
        "target_false_alarms_met": windows > 0 and alarms / windows <= 0.01,
    }


def _median(values):
    got = [v for v in values if v is not None]
    return statistics.median(got) if len(got) == len(values) and got else None
