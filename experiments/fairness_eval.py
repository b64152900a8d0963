"""Bias report of a trained toxicity classifier: `python -m experiments.fairness_eval --checkpoint DIR
--data FILE.jsonl [--json] [--scores-out FILE] [--plugin MODULE] [--batch-size N] [--min-per-class N]
[--bootstrap N] [--seed S] [--record [--signing-key FILE]]`.

DIR is the --workdir of a `task.kind=sequence_classification` run; its latest checkpoint scores
every example of FILE.jsonl (`{"text": str, "label": 0/1, "identities": [names]}` per line).
Printed: overall AUC, per-identity subgroup/BPSN/BNSP AUC and per-axis gaps
(holo_jax.fairness.metrics.bias_report) for the Civil Comments identities the data mentions plus
those the run tracks (task.identities). --json prints the whole report as one JSON object;
--scores-out writes one `{"score": p}` (probability of label 1) per example, in file order.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from experiments.cli import Parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(prog="python -m experiments.fairness_eval", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="--workdir of a sequence_classification run")
    p.add_argument("--data", required=True, metavar="FILE.jsonl", help='{"text", "label", "identities"} lines')
    p.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    p.add_argument("--scores-out", metavar="FILE", help='write one {"score": p} line per example, in order')
    p.add_argument("--record", action="store_true",
                   help="also write the report into DIR/reports/fairness.json and log it by digest in the run's "
                        "audit log (what `python -m holo_jax.governance release` reads)")
    p.add_argument("--signing-key", metavar="FILE", help="Ed25519 key for --record (else $HOLO_JAX_SIGNING_KEY, else ephemeral)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (one that registers the run's stage kinds)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per forward pass (default 32)")
    p.add_argument("--min-per-class", type=int, default=None,
                   help="examples of each class a comparison needs on each side (default: bias_report's)")
    p.add_argument("--bootstrap", type=int, default=None,
                   help="resamples for the confidence intervals (default: bias_report's 1000; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and pinned-AUC samples")
    return p.parse_args(argv)


def _text_summary(report: dict, step: int) -> str:
    fmt = lambda x: "  nan" if isinstance(x, float) and math.isnan(x) else f"{x:.3f}"  # noqa: E731
    lines = [f"step {step}: {report['n_examples']} examples ({report['n_positives']} toxic), "
             f"overall AUC {fmt(report['overall_auc'])}, final score {fmt(report['final_score'])}",
             f"{'identity':<32} {'n':>5} {'subgroup':>8} {'BPSN':>8} {'BNSP':>8}"]
    for m in report["identities"]:
        lines.append(f"{m['identity']:<32} {m['subgroup_size']:>5} {fmt(m['subgroup_auc']):>8} "
                     f"{fmt(m['bpsn_auc']):>8} {fmt(m['bnsp_auc']):>8}")
    for a in report["axes"]:
        lines.append(f"axis {a['axis']}: AUC gap {fmt(a['auc_gap'])}, FPR gap {fmt(a['fpr_gap'])}, "
                     f"FNR gap {fmt(a['fnr_gap'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Imports after argument parsing so `--help` is instant.
    import numpy as np

    from holo_jax.errors import HoloError
    from holo_jax.fairness import bias_report
    from holo_jax.fairness.scoring import identities_to_report, load_classifier, membership, read_examples
    from holo_jax.train.jsonl import jsonable

    from experiments.cli import import_plugins

    import_plugins(args.plugin)
    if args.batch_size < 1:
        raise HoloError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.min_per_class is not None and args.min_per_class < 1:
        raise HoloError(f"--min-per-class must be at least 1, got {args.min_per_class}.")
    # The data first: it is cheap to read, and a bad line should not wait for a model restore.
    examples = read_examples(args.data)
    classifier = load_classifier(args.checkpoint, batch_size=args.batch_size)
    names = identities_to_report(examples, classifier.task_cfg.identities)
    if not names:
        raise HoloError(f"no example of --data {args.data} names an identity and the run tracks none "
                        "(task.identities); add `identities` to the lines to get per-identity figures.")
    scores = classifier.score([ex.text for ex in examples])
    labels = np.asarray([ex.label for ex in examples], dtype=np.int8)
    kwargs = {} if args.min_per_class is None else {"min_per_class": args.min_per_class}
    if args.bootstrap is not None:
        kwargs["bootstrap"] = args.bootstrap
    kwargs["seed"] = args.seed
    report = bias_report(labels, scores, membership(examples, names), names, **kwargs).to_dict()
    if args.scores_out:
        from experiments.cli import write_json_lines

        write_json_lines(args.scores_out, ({"score": float(p)} for p in scores), "--scores-out")
    out = {"checkpoint": str(classifier.workdir), "step": classifier.step, "data": os.path.abspath(args.data),
           **report}
    if args.record:
        from holo_jax.governance import record_report

        record_report(classifier.workdir, "fairness", out, signing_key=args.signing_key, step=classifier.step,
                      data=os.path.abspath(args.data))
    if args.json:
        print(json.dumps(jsonable(out), allow_nan=False), flush=True)
    else:
        print(_text_summary(report, classifier.step), flush=True)
    return 0


if __name__ == "__main__":
    from holo_jax.errors import exit_on_user_error

    sys.exit(exit_on_user_error(main, hard_exit=True)())
