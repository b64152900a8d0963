"""Drift detection on texts through a trained run's model.

    python -m experiments.drift --checkpoint DIR --reference FILE... --stream FILE... [--window N] --json
    python -m experiments.drift --checkpoint DIR --measure [--seeds 5] --json      # delays among domains
    python -m experiments.drift --bench-overhead [--config default] [--repeats 20] --json

The first form scores the reference files and the stream files (.txt or .jsonl, as data.source=files
reads them) through DIR's model (any pretrain or classifier --workdir), calibrates the window tests
on the reference alone for `--false-alarm-rate` per window (expected run length 1/rate windows), and
prints JSON with `windows` (per window: `file`, `statistic`, `threshold`, `alarm`, and each test's
figures under `tests`), `first_alarm_window`, `switch_window` (the first window of the second stream
file) and `false_alarms_before_switch`; it also writes a PNG of the statistic (`--plot`).
`--measure` prints the detection delays and stationary false-alarm rates of holo_jax.drift.measure
(the offline detector), or with `--protocol training` those of the in-training monitor on the trainer's
own batches (holo_jax.drift.measure_training).
`--bench-overhead` times the pretrain config's train step with and without the drift stage,
interleaved in one process, and prints the ratio of medians with a bootstrap 95% interval, and the
compiled steps' FLOP and byte overheads by XLA's cost model (a figure the machine's load cannot move).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from experiments.cli import Parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(prog="python -m experiments.drift", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", metavar="DIR", help="--workdir of a pretrain or classification run")
    p.add_argument("--reference", nargs="+", default=[], metavar="FILE", help=".txt/.jsonl reference texts")
    p.add_argument("--stream", nargs="+", default=[], metavar="FILE", help=".txt/.jsonl stream, in order")
    p.add_argument("--window", type=int, default=8, help="sequences per window (default 8)")
    p.add_argument("--false-alarm-rate", type=float, default=0.005,
                   help="per-window false-alarm rate the thresholds are calibrated for (default 0.005)")
    p.add_argument("--text-key", default="text", help="field of .jsonl records holding the text")
    p.add_argument("--plot", default="drift_windows.png", metavar="FILE.png", help="where the PNG goes")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--measure", action="store_true", help="measure delays and false alarms among domains")
    p.add_argument("--seeds", type=int, default=5, help="--measure: reference/stream splits per domain")
    p.add_argument("--protocol", choices=("blocks", "segments", "training"), default="blocks",
                   help="--measure: blocks/segments split each domain into reference and stream for the offline "
                        "detector (holo_jax.drift.measure); training runs the in-training monitor on the "
                        "trainer's own batches (holo_jax.drift.measure_training)")
    p.add_argument("--bench-overhead", action="store_true", help="time the step with and without the stage")
    p.add_argument("--config", default="default", help="--bench-overhead: named pretrain config")
    p.add_argument("--repeats", type=int, default=20, help="--bench-overhead: timed steps per variant")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (one that registers the run's stage kinds)")
    return p.parse_args(argv)


def bench_overhead(config_name: str, repeats: int) -> dict:
    """Step seconds of the config's train step without and with the drift stage, alternating step
    by step in one process (so both see the same machine load); the ratio of medians, its interval,
    and what the compiler counts for each step."""
    import jax
    import numpy as np

    from experiments.configs import pretrain as configs
    from holo_jax.drift import DriftConfig, DriftStage
    from holo_jax.parallel.mesh import build_mesh
    from holo_jax.train.optimizer import learning_rate_schedule, make_optimizer
    from holo_jax.train.state import init_train_state
    from holo_jax.train.step import jit_train_step, make_train_step
    from holo_jax.train.tasks import NextTokenLM

    cfg = configs.get(config_name)
    devices = jax.devices()[:1]
    from holo_jax.config import MeshConfig

    mesh = build_mesh(MeshConfig(data=1, fsdp=1, tensor=1, plan="manual"), cfg.model, devices)
    task = NextTokenLM()
    model = task.build_model(cfg.model)
    optimizer = make_optimizer(cfg.optim, cfg.steps)
    schedule = learning_rate_schedule(cfg.optim, cfg.steps)
    b, t = cfg.global_batch, cfg.model.max_len
    rows = np.random.default_rng(0).integers(0, 256, (b, t + 1)).astype(np.int32)
    batch = {"inputs": jax.numpy.asarray(rows[:, :-1]), "targets": jax.numpy.asarray(rows[:, 1:])}
    variants = {}
    for name, stages in (("without", ()), ("with", (DriftStage(DriftConfig()),))):
        for s in stages:
            s.name = "drift"
            s.bind_task(task)
        state, shardings = init_train_state(model, task.init_inputs(t), optimizer, stages, mesh, cfg.seed)
        step = jit_train_step(make_train_step(task, model, optimizer, schedule, stages, mesh, cfg.microbatches),
                              shardings, batch, mesh)
        variants[name] = [step, state]
    times = {k: [] for k in variants}
    cost = {}
    with jax.set_mesh(mesh):
        # Compiled once, ahead of time: the executable that is timed is the one whose cost XLA's
        # model counts (floating-point operations and bytes moved: deterministic, unlike the timings).
        for name, (step, state) in variants.items():
            compiled = step.lower(state, batch).compile()
            analysis = compiled.cost_analysis()
            analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
            cost[name] = {k: float(analysis.get(k, float("nan"))) for k in ("flops", "bytes accessed")}
            variants[name][0] = compiled
        for i in range(repeats + 2):
            for name in (("without", "with") if i % 2 == 0 else ("with", "without")):  # alternate the order too
                step, state = variants[name]
                t0 = time.perf_counter()
                state, metrics, emitted = step(state, batch)
                jax.block_until_ready((state, metrics, emitted))
                jax.device_get(emitted)  # what the loop reads back of the emit, inside the timing
                elapsed = time.perf_counter() - t0
                variants[name][1] = state
                if i >= 2:  # the first two rounds warm up
                    times[name].append(elapsed)
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = [w / o for w, o in zip(times["with"], times["without"])]
    # How far the declared figure can move on this machine: a bootstrap over the timed rounds (each
    # resample keeps a round's two steps together, as they ran under the same load).
    with_r, without_r = np.asarray(times["with"]), np.asarray(times["without"])
    picks = np.random.default_rng(0).integers(0, repeats, (2000, repeats))
    boot = np.median(with_r[picks], axis=1) / np.median(without_r[picks], axis=1) - 1.0
    overhead = med["with"] / med["without"] - 1.0
    return {"config": config_name, "device": str(devices[0].device_kind), "global_batch": b, "seq_len": t,
            "remat": cfg.model.remat, "repeats": repeats,
            "step_seconds_without": med["without"], "step_seconds_with": med["with"],
            "overhead_ratio_of_medians": overhead,
            "overhead_ratio_of_medians_95ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "overhead_median_of_paired_ratios": statistics.median(paired) - 1.0,
            "compiled_flops_overhead": cost["with"]["flops"] / cost["without"]["flops"] - 1.0,
            "compiled_bytes_accessed_overhead": cost["with"]["bytes accessed"] / cost["without"]["bytes accessed"] - 1.0,
            "step_seconds_without_all": times["without"], "step_seconds_with_all": times["with"],
            "target_overhead_at_most": 0.02,
            "target_met": overhead <= 0.02}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from holo_jax.errors import HoloError

    import holo_jax.drift  # noqa: F401  (registers the drift stage kind, for runs trained with it)
    import holo_jax.fairness  # noqa: F401  (registers the fairness stage kinds)

    from experiments.cli import import_plugins

    import_plugins(args.plugin)
    if args.bench_overhead:
        if args.repeats < 3:
            raise HoloError(f"--repeats must be at least 3, got {args.repeats}.")
        print(json.dumps(bench_overhead(args.config, args.repeats)), flush=True)
        return 0
    if not args.checkpoint:
        raise HoloError("--checkpoint DIR is required (the --workdir of a pretrain or classification run).")
    if args.window < 1:
        raise HoloError(f"--window must be at least 1 sequence, got {args.window}.")
    if not 0.0 < args.false_alarm_rate < 0.5:
        raise HoloError(f"--false-alarm-rate must be between 0 and 0.5, got {args.false_alarm_rate}.")
    from holo_jax.data.local_files import expand_paths
    from holo_jax.drift.offline import SequenceScorer, calibrate, file_features, plot_windows, score_stream
    from holo_jax.drift.restore import load_run

    if not args.measure:
        if not args.reference or not args.stream:
            raise HoloError("give --reference FILE... and --stream FILE... (or --measure).")
        expand_paths(args.reference), expand_paths(args.stream)  # bad paths fail before the model loads
        if not args.plot.endswith(".png"):
            raise HoloError(f"--plot {args.plot} must name a .png file.")
    scorer = SequenceScorer(load_run(args.checkpoint))
    if args.measure:
        from holo_jax.drift.measure import measure

        if args.seeds < 1:
            raise HoloError(f"--seeds must be at least 1, got {args.seeds}.")
        if args.protocol == "training":
            from holo_jax.drift.measure_training import measure_training

            result = measure_training(scorer, window=args.window, false_alarm_rate=args.false_alarm_rate,
                                      seeds=args.seeds)
        else:
            result = measure(scorer, window=args.window, false_alarm_rate=args.false_alarm_rate, seeds=args.seeds,
                             protocol=args.protocol)
    else:
        reference = file_features(scorer, args.reference, args.text_key)
        detector = calibrate(reference, args.window, args.false_alarm_rate)
        result = score_stream(detector, file_features(scorer, args.stream, args.text_key), args.window)
        plot_windows(result, args.plot, title=f"drift: {len(args.stream)} stream file(s) vs reference")
        result = {"checkpoint": str(scorer.run.workdir), "checkpoint_step": scorer.run.step,
                  "window_sequences": args.window, "sequence_tokens": scorer.run.model_cfg.max_len,
                  "false_alarm_rate": args.false_alarm_rate,
                  "expected_run_length_windows": detector.expected_run_length,
                  "reference": {"files": [p for p, _ in reference],
                                "sequences": sum(len(f["loss"]) for _, f in reference),
                                "calibration_windows": detector.reference_windows},
                  "threshold_h": detector.h, "cusum_allowance": detector.allowance,
                  "simulated_false_alarm_rate": detector.simulated_false_alarm_rate, "plot": os.path.abspath(args.plot), **result}
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        for w in result.get("windows", []):
            print(f"{w['index']:4d} {w['file']}  statistic {w['statistic']:.3f} / {w['threshold']:.1f}"
                  f"{'  ALARM' if w['alarm'] else ''}")
        print(json.dumps({k: v for k, v in result.items() if k != "windows"}, indent=1))
    return 0


if __name__ == "__main__":
    from holo_jax.errors import exit_on_user_error

    sys.exit(exit_on_user_error(main, hard_exit=True)())
