"""Pretrain a decoder-only LM: `python -m experiments.pretrain --workdir DIR [--steps N] [--stop-after K]
[--config NAME] [--set key=value ...]`. Re-running with the same DIR resumes.

Multi-process: started by `experiments.launch_local`, a scheduler (SLURM, Open MPI, Kubernetes:
detected from the environment) or explicit --coordinator/--num-processes/--process-id flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from experiments.cli import Parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(prog="python -m experiments.pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="run directory: metrics, events, checkpoints")
    p.add_argument("--config", default="default", help="named config from experiments/configs/pretrain.py")
    p.add_argument("--steps", type=int, help="total length of the run (the LR schedule follows it)")
    p.add_argument("--stop-after", type=int, help="save and stop after this step, as a preemption would")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (e.g. one that registers stage kinds for --set stages=KIND)")
    p.add_argument("--no-audit", action="store_true",
                   help="no audit log under DIR/audit (on by default; policy gates still apply)")
    p.add_argument("--policy", metavar="FILE",
                   help="YAML policy of CEL gates (default: holo_jax/governance/policies/default.yaml)")
    p.add_argument("--signing-key", metavar="FILE",
                   help="Ed25519 key for the audit log (else $HOLO_JAX_SIGNING_KEY, else a per-run ephemeral key)")
    p.add_argument("--coordinator", help="host:port of process 0 for multi-process runs")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Imports after argument parsing so `--help` is instant.
    from holo_jax.config import override
    from holo_jax.errors import HoloError
    from holo_jax.governance import run_sinks
    from holo_jax.runtime import initialize
    from holo_jax.train.loop import train
    from experiments.configs import pretrain as configs

    initialize(args.coordinator, args.num_processes, args.process_id)
    import holo_jax.fairness  # noqa: F401  (registers the shipped stage kinds: adversarial_debias)
    import holo_jax.drift  # noqa: F401  (registers the drift stage kind)
    from experiments.cli import import_plugins

    import_plugins(args.plugin)
    cfg = override(configs.get(args.config), args.set)
    if args.steps is not None:
        if args.steps < 1:
            raise HoloError(f"--steps must be at least 1, got {args.steps}.")
        cfg = dataclasses.replace(cfg, steps=args.steps)
    if args.stop_after is not None and args.stop_after < 1:
        raise HoloError(f"--stop-after must be at least 1, got {args.stop_after}.")
    cfg.check()  # train() checks again; here so a bad setting fails before anything else happens
    # Audit log (DIR/audit) and policy gates: the before-training gate is checked here, before anything runs.
    sinks = run_sinks(args.workdir, cfg.to_dict(), policy=args.policy, signing_key=args.signing_key,
                      audit=not args.no_audit)
    sinks = [*sinks, *holo_jax.drift.drift_sinks(cfg, args.workdir)]  # alarms of --set stages=drift
    result = train(cfg, args.workdir, stop_after=args.stop_after, sinks=sinks)
    if result.stopped_early:
        print(f"stopped early at step {result.final_step} ({result.reason}); run the same command again to resume.",
              file=sys.stderr, flush=True)
    print(json.dumps(dataclasses.asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    from holo_jax.errors import exit_on_user_error

    sys.exit(exit_on_user_error(main, hard_exit=True)())
