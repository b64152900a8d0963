"""Explain a trained toxicity classifier: `python -m experiments.explain --checkpoint DIR --data FILE.jsonl
[--json] [--explanations-out FILE] [--html FILE] [--png FILE] [--devices N] [--batch-size N]
[--ig-steps N] [--samples N] [--precision-target P] [--holdout-fraction F] [--max-rules N] [--rule-precision P]
[--validation-fraction F] [--queries N] [--pair-words N] [--latency N] [--seed S] [--record [--signing-key FILE]]`.

DIR is the --workdir of a `task.kind=sequence_classification` run (its latest checkpoint); FILE.jsonl
holds `{"text", "label", "identities"}` lines (labels are not used: explanations are of the model's
decisions). For every line: word relevance by raw attention, attention rollout, gradient-weighted
rollout, Grad-CAM, integrated gradients, random and the rule engine (`symbolic`), and a local rule
whose precision is measured under perturbation. Over the file: a global decision list mined on one
part (1 - --holdout-fraction) and measured on the rest (fidelity, coverage, precision,
simulatability), and the faithfulness of every method (holo_jax.explain.faithfulness). The decision
list's length is chosen on a --validation-fraction part of the mining texts (no cap unless --max-rules),
its rules' least precision from a grid (or --rule-precision), and the model's decisions on --queries
word-swapped variants of each mining text join the mining data (holo_jax.explain.rules, module doc).

--json prints one JSON object; --explanations-out writes one line per input line, in order:
`{"words": [...], "relevance": {"<method>": [one float per word]}, "rule": str, ...}`. The words are
the text's whitespace-separated words; deleting words means removing them from that list and
re-joining the rest with single spaces, so faithfulness can be recomputed by re-scoring the edited
texts with `python -m experiments.fairness_eval --scores-out`. --html writes a page with the
highlighted words and the rules; --png the deletion and insertion curves (default: next to --html).
--latency N times the local rule at batch 1 on N examples (0: skip).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from experiments.cli import Parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(prog="python -m experiments.explain", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="--workdir of a sequence_classification run")
    p.add_argument("--data", required=True, metavar="FILE.jsonl", help='{"text", "label", "identities"} lines')
    p.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    p.add_argument("--explanations-out", metavar="FILE", help="one JSON line of words, relevance and rule per input")
    p.add_argument("--html", metavar="FILE", help="write a page with highlighted words and the rules")
    p.add_argument("--png", metavar="FILE", help="deletion/insertion curves (default: next to --html, if given)")
    p.add_argument("--html-examples", type=int, default=200, help="examples shown on the page (default 200)")
    p.add_argument("--record", action="store_true",
                   help="also write the report into DIR/reports/explanation.json and log it by digest in the run's "
                        "audit log (what `python -m holo_jax.governance release` reads)")
    p.add_argument("--signing-key", metavar="FILE", help="Ed25519 key for --record (else $HOLO_JAX_SIGNING_KEY, else ephemeral)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (one that registers the run's stage kinds)")
    p.add_argument("--devices", type=int, default=0, help="devices of the data-parallel mesh (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per attribution batch (default 8)")
    p.add_argument("--score-batch", type=int, default=64, help="texts per scoring batch (default 64)")
    p.add_argument("--ig-steps", type=int, default=16, help="integrated-gradients Gauss-Legendre nodes (default 16)")
    p.add_argument("--rule-relevance", default="grad_attention_rollout",
                   help="the attribution the rules start from (default grad_attention_rollout)")
    p.add_argument("--candidates", type=int, default=8, help="words a local rule chooses from (default 8)")
    p.add_argument("--max-rule-words", type=int, default=5, help="most words in a local rule (default 5)")
    p.add_argument("--samples", type=int, default=64, help="perturbations per precision check (default 64)")
    p.add_argument("--precision-target", type=float, default=0.9, help="local and global rule precision (0.9)")
    p.add_argument("--holdout-fraction", type=float, default=0.5, help="share held out from rule mining (0.5)")
    p.add_argument("--min-support", type=int, default=3, help="examples a global rule must cover (default 3)")
    p.add_argument("--max-rules", type=int, default=0,
                   help="most rules in the global decision list (default 0: no cap, the length is chosen on a "
                        "validation part of the mining texts)")
    p.add_argument("--rule-precision", type=float, action="append", metavar="P",
                   help="least precision of a global rule (repeat to give several; default: the best on the "
                        "validation part of 0.7, 0.75, 0.8, 0.85, 0.9)")
    p.add_argument("--validation-fraction", type=float, default=0.25,
                   help="share of the mining texts that chooses the decision list's length (default 0.25)")
    p.add_argument("--queries", type=int, default=8,
                   help="variants of each mining text the model decides, as extra mining data (default 8; 0: none)")
    p.add_argument("--pair-words", type=int, default=40,
                   help="most relevant words whose pairwise conjunctions are global-rule candidates (default 40)")
    p.add_argument("--latency", type=int, default=20, help="examples timed at batch 1 (default 20; 0: skip)")
    p.add_argument("--latency-repeats", type=int, default=3, help="repeats of the latency timing (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbations, the split and `random`")
    return p.parse_args(argv)


def _check_writable(flag: str, path: str | None) -> None:
    from holo_jax.errors import HoloError

    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise HoloError(f"{flag} {path}: its directory does not exist; create it or give another path.")


def _targets(faith: dict, rules: dict) -> dict:
    m = faith["methods"]
    best_comp = max(m["grad_cam"]["comprehensiveness_aopc"], m["raw_attention"]["comprehensiveness_aopc"])
    best_suff = min(m["grad_cam"]["sufficiency_aopc"], m["raw_attention"]["sufficiency_aopc"])
    return {
        "symbolic_comprehensiveness_at_least_best_of_grad_cam_raw_attention":
            m["symbolic"]["comprehensiveness_aopc"] >= best_comp,
        "symbolic_sufficiency_at_least_as_good_as_best_of_grad_cam_raw_attention":
            m["symbolic"]["sufficiency_aopc"] <= best_suff,
        "global_fidelity_at_least_0.9": rules["fidelity"] >= 0.9,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from holo_jax.errors import HoloError
    from holo_jax.explain import (
        ALL_METHODS, Attributor, RuleSettings, comparison_table, data_mesh, explain_texts, faithfulness,
        global_rules, html_page, local_rule_summary, measure_latency, plot_curves,
    )
    from holo_jax.explain.render import write_atomic
    from holo_jax.explain.rules import DEFAULT_RULE_PRECISIONS
    from holo_jax.explain.scoring import BucketedScorer
    from holo_jax.fairness.scoring import load_classifier, read_examples
    from holo_jax.train.jsonl import jsonable

    from experiments.cli import import_plugins

    import_plugins(args.plugin)
    for flag in ("batch_size", "score_batch", "ig_steps", "html_examples", "latency_repeats", "min_support"):
        if getattr(args, flag) < 1:
            raise HoloError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}.")
    for flag in ("latency", "devices", "max_rules", "queries", "pair_words"):
        if getattr(args, flag) < 0:
            raise HoloError(f"--{flag.replace('_', '-')} must be 0 or more, got {getattr(args, flag)}.")
    if not 0.0 <= args.validation_fraction < 1.0:
        raise HoloError(f"--validation-fraction must be in [0, 1), got {args.validation_fraction}.")
    for value in args.rule_precision or ():
        if not 0.5 <= value <= 1.0:
            raise HoloError(f"--rule-precision must be in [0.5, 1], got {value}.")
    settings = RuleSettings(relevance=args.rule_relevance, candidates=args.candidates, max_words=args.max_rule_words,
                            samples=args.samples, precision_target=args.precision_target, seed=args.seed)
    settings.check()
    for flag, path in (("--explanations-out", args.explanations_out), ("--html", args.html), ("--png", args.png)):
        _check_writable(flag, path)
    png = args.png or (os.path.splitext(args.html)[0] + "_deletion.png" if args.html else None)
    # The data first: it is cheap to read, and a bad line should not wait for a model restore.
    examples = read_examples(args.data)
    texts = [ex.text for ex in examples]
    import jax

    mesh = data_mesh(args.devices or len(jax.devices()))
    classifier = load_classifier(args.checkpoint, batch_size=args.score_batch)
    attributor = Attributor(classifier, mesh=mesh, batch_size=args.batch_size, ig_steps=args.ig_steps,
                            seed=args.seed)
    t0 = time.perf_counter()
    expl = explain_texts(classifier, attributor, texts, settings, score_batch=args.score_batch)
    explain_seconds = time.perf_counter() - t0
    score = BucketedScorer(classifier, args.score_batch)
    rules_report, dlist = global_rules(
        expl, holdout_fraction=args.holdout_fraction, seed=args.seed,
        rule_precision=tuple(args.rule_precision) if args.rule_precision else DEFAULT_RULE_PRECISIONS,
        min_support=args.min_support, max_rules=args.max_rules or None, pair_words=args.pair_words,
        queries=args.queries, validation_fraction=args.validation_fraction, score=score,
        relevance=settings.relevance)
    rules_seconds = time.perf_counter() - t0 - explain_seconds
    t1 = time.perf_counter()
    faith = faithfulness(expl.words, expl.probability, expl.decisions, expl.relevance, score)
    faith_seconds = time.perf_counter() - t1
    latency = measure_latency(classifier, texts[:args.latency], settings, repeats=args.latency_repeats) \
        if args.latency else None
    ig = {}
    if expl.ig_completeness_error is not None:
        err, delta = expl.ig_completeness_error, np.abs(expl.ig_target_delta)
        relative = err / np.maximum(delta, 1e-6)
        ig = {"steps": args.ig_steps, "abs_error_median": float(np.median(err)), "abs_error_max": float(err.max()),
              "abs_target_delta_median": float(np.median(delta)),
              "relative_error_median": float(np.median(relative))}
    n = len(texts)
    report = {
        "checkpoint": str(classifier.workdir), "step": classifier.step, "data": os.path.abspath(args.data),
        "n_examples": n, "share_decided_toxic": float(expl.decisions.mean()),
        "faithfulness": faith, "targets": _targets(faith, rules_report), "global_rules": rules_report,
        "local_rules": local_rule_summary(expl.rules, args.precision_target),
        "integrated_gradients_completeness": ig,
        "timing": {"devices": int(mesh.devices.size), "attribution_batch": attributor.batch_size,
                   "explain_seconds": explain_seconds, "explain_examples_per_second": n / explain_seconds,
                   "breakdown_seconds": expl.seconds,
                   "attribution_examples_per_second": n / expl.seconds["attributions"],
                   "global_rules_seconds": rules_seconds, "faithfulness_seconds": faith_seconds,
                   "latency_batch1": latency},
        "settings": {"rule_relevance": settings.relevance, "candidates": settings.candidates,
                     "max_rule_words": settings.max_words, "samples": settings.samples,
                     "precision_target": settings.precision_target, "holdout_fraction": args.holdout_fraction,
                     "ig_steps": args.ig_steps, "max_rules": args.max_rules, "min_support": args.min_support,
                     "rule_precision": args.rule_precision or list(DEFAULT_RULE_PRECISIONS),
                     "validation_fraction": args.validation_fraction, "queries": args.queries,
                     "pair_words": args.pair_words,
                     "seed": args.seed},
    }
    if args.explanations_out:
        from experiments.cli import write_json_lines

        write_json_lines(args.explanations_out, (expl.line(i) for i in range(n)), "--explanations-out")
    table = comparison_table(faith)
    if png and faith["n_examples"]:
        plot_curves(faith, png, title=f"{os.path.basename(args.data)}: {faith['n_examples']} examples")
        report["png"] = os.path.abspath(png)
    if args.html:
        summary = {"fidelity": rules_report["fidelity"], "coverage": rules_report["coverage"],
                   "held-out examples": rules_report["n_heldout"],
                   "local rule mean precision": report["local_rules"]["mean_precision"]}
        relevance = {m: expl.relevance[m] for m in ALL_METHODS if m in expl.relevance}
        write_atomic(args.html, html_page(
            title=f"Explanations of {classifier.workdir.name} on {os.path.basename(args.data)}", words=expl.words,
            relevance=relevance, rules=[r.to_dict() for r in expl.rules], probabilities=expl.probability,
            decision_list_text=dlist.text(), summary=summary, faithfulness_table=table, limit=args.html_examples))
    if args.record:
        from holo_jax.governance import record_report

        record_report(classifier.workdir, "explanation", report, signing_key=args.signing_key, step=classifier.step,
                      data=os.path.abspath(args.data))
    if args.json:
        print(json.dumps(jsonable(report), allow_nan=False), flush=True)
    else:
        lines = [f"step {classifier.step}: {n} examples, {report['share_decided_toxic']:.1%} decided toxic",
                 table, "", dlist.text(),
                 f"held-out fidelity {rules_report['fidelity']:.3f}, coverage {rules_report['coverage']:.3f} "
                 f"({rules_report['n_heldout']} examples); simulatability gain "
                 f"{rules_report['simulatability']['gain']:+.3f}"]
        if latency:
            lines.append(f"local rule latency (batch 1, median): {latency['local_rule_ms_median']:.1f} ms; "
                         f"perturbation checks {latency['perturbation_checks_ms_median']:.1f} ms")
        print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    from holo_jax.errors import exit_on_user_error

    sys.exit(exit_on_user_error(main, hard_exit=True)())
