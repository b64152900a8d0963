"""Train a toxicity classifier with and without debiasing and compare their bias:
`python -m experiments.debias --workdir DIR [--seeds N] [--config NAME] [--train FILE.jsonl --eval FILE.jsonl]
[--heldout FILE.jsonl] [--methods baseline,adversarial,mindiff] [--axes gender,ethnicity,religion]
[--set key=value ...] [--explain-examples N] [--no-audit] [--policy FILE] [--signing-key FILE] [--json]`.

Per seed, every method trains the same config on the same data with the same seed (the baseline as
it is, `adversarial` with the `adversarial_debias` stage, `mindiff` with the `mindiff` stage), then
each model scores every example of the evaluation set (and of the held-out set) and gets a bias
report (holo_jax.fairness.metrics.bias_report, with bootstrap intervals). Written into DIR:
  report.json   the reports, the per-axis gap reductions against the baseline of the same seed,
                the verdict against the target (holo_jax.fairness.comparison.Target), step times;
  report.md     the same as tables; both with an `explanations` section (--explain-examples N, 0 to
                skip): on N examples of the first evaluation set, which identity words each seed-0
                model's local and global rules lean on (holo_jax.explain.identity);
  <set>_<axis>.png  per identity of that axis, each method's subgroup/BPSN/BNSP AUC with intervals;
  baseline/, adversarial/, mindiff/   the first seed's runs (each a --checkpoint for fairness_eval);
  seed<k>/<method>/                   those of further seeds. Each run has its audit log (audit/,
                unless --no-audit) and its own bias report on the first evaluation set,
                fairness_<set>.json, logged there by digest for `python -m holo_jax.governance release`.
Re-running with the same DIR resumes: finished runs are kept, an interrupted one continues.

Data: by default the embedded toxicity set (training split with its planted identity bias, its
balanced validation split to evaluate) and, held out, `holo_jax.data.heldout_toxicity` (other frames
and words, written independently of the training templates). With --train/--eval, the user's
`{"text", "label", "identities"}` files: the run trains on --train (its in-loop validation is the
usual hash hold-out of that file) and the report scores every line of --eval.

--set applies to every method, except `stages.adversarial_debias.*` (the adversarial method only)
and `stages.mindiff.*` (the mindiff method only). Seeds k = 0..N-1 set the run's `seed` (parameter
init, dropout and shuffling draws) to K + k, where K is --first-seed (default 0: tune on seeds that are
not the measured ones with, say, --first-seed 100; the runs stay under seed<k>/).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

from experiments.cli import Parser

# The debiased methods: the stage each adds on top of the baseline config, with its settings here
# (their sections' defaults otherwise). Measured choices: BENCHMARKS.md, issue 12.
METHOD_STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    # alpha 0.3 rather than the stage's 0.1 (AIF360's default): on the embedded set, seed 0, 1000
    # steps, 0.3 closed the religion gap by 70% where 1.0 without the projection closed 55%, and
    # both cost 2.5-3 points of overall AUC (BENCHMARKS.md, issue 12, tuning runs).
    "adversarial": ("adversarial_debias", ("alpha=0.3",)),
    "mindiff": ("mindiff", ()),
}
METHODS = ("baseline", *METHOD_STAGES)
DEFAULT_AXES = ("gender", "ethnicity", "religion")
BOOTSTRAP = 1000  # resamples per bias report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(prog="python -m experiments.debias", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, metavar="DIR", help="where the runs and the report go")
    p.add_argument("--seeds", type=int, default=1, help="repeat with seeds 0..N-1 (default 1)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds K..K+N-1 instead of 0..N-1 (tune on seeds that are not the measured ones)")
    p.add_argument("--config", default="toxicity", help="named config from experiments/configs/debias.py")
    p.add_argument("--train", metavar="FILE.jsonl", help="train on this file instead of the embedded set")
    p.add_argument("--eval", metavar="FILE.jsonl", help="score this file for the report (with --train)")
    p.add_argument("--heldout", metavar="FILE.jsonl",
                   help="a second evaluation set, reported separately (default with the embedded set: "
                        "holo_jax.data.heldout_toxicity)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--axes", default=",".join(DEFAULT_AXES), help="the axes the verdict is on")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--timing-steps", type=int, default=10,
                   help="steps per method per round of the interleaved step-time measurement (0: skip)")
    p.add_argument("--explain-examples", type=int, default=400,
                   help="examples of the first evaluation set whose rules show which identity words each "
                        "seed-0 model leans on (holo_jax.explain.identity; default 400, 0: skip)")
    p.add_argument("--json", action="store_true", help="print report.json's summary on stdout")
    p.add_argument("--no-audit", action="store_true",
                   help="no audit log in the runs' DIR/<method>/audit (on by default; policy gates still apply)")
    p.add_argument("--policy", metavar="FILE", help="YAML policy of CEL gates (default: the shipped one)")
    p.add_argument("--signing-key", metavar="FILE",
                   help="Ed25519 key for the audit logs (else $HOLO_JAX_SIGNING_KEY, else a per-run ephemeral key)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# configs


def _split_sets(sets: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(sets for every method, method -> sets for it alone)."""
    from holo_jax.errors import HoloError

    common, own = [], {m: [] for m in METHOD_STAGES}
    by_section = {f"stages.{kind}.": method for method, (kind, _) in METHOD_STAGES.items()}
    for assignment in sets:
        key = assignment.split("=", 1)[0].strip()
        method = next((m for prefix, m in by_section.items() if key.startswith(prefix)), None)
        if method:
            own[method].append(assignment)
        elif key == "stages" or key.startswith("stages."):
            raise HoloError(f"--set {assignment}: experiments.debias chooses each method's stages itself; set only "
                            f"{' or '.join(p + 'FIELD' for p in by_section)}.")
        else:
            common.append(assignment)
    return common, own


def method_configs(base, sets: list[str], methods: tuple[str, ...], seed: int) -> dict:
    """method -> its TrainConfig, every one from the same base, data and seed."""
    from holo_jax.config import override

    common, own = _split_sets(sets)
    base = dataclasses.replace(override(base, common), seed=seed)
    out = {}
    for method in methods:
        if method == "baseline":
            out[method] = base
            continue
        kind, defaults = METHOD_STAGES[method]
        out[method] = override(base, [f"stages={kind}", *(f"stages.{kind}.{s}" for s in defaults), *own[method]])
    for cfg in out.values():
        cfg.check()
    return out


def run_dir(workdir: Path, seed_index: int, method: str) -> Path:
    """The first seed's runs at the top (DESIGN.md's contract), further seeds under seed<k>/."""
    return workdir / method if seed_index == 0 else workdir / f"seed{seed_index}" / method


# ----------------------------------------------------------------------------------------------
# evaluation sets


@dataclasses.dataclass
class EvalSet:
    name: str  # "eval" or "heldout"
    source: str  # where it came from, for the report
    texts: list
    labels: object  # int8 [n]
    membership: object  # int8 [n, k]
    identities: tuple


def _eval_set(name: str, source: str, examples, identities: tuple[str, ...]) -> EvalSet:
    import numpy as np

    from holo_jax.fairness.scoring import membership

    return EvalSet(name, source, [e.text for e in examples], np.asarray([e.label for e in examples], np.int8),
                   membership(examples, identities), identities)


def embedded_eval_sets(identities) -> list[EvalSet]:
    from holo_jax.data.embedded_toxicity import EmbeddedToxicitySource
    from holo_jax.data.heldout_toxicity import HeldoutToxicitySource

    sets = []
    for name, source in (("eval", EmbeddedToxicitySource("validation")), ("heldout", HeldoutToxicitySource())):
        examples = [source.example(i) for i in range(source.num_documents())]
        sets.append(_eval_set(name, repr(source), examples, identities))
    return sets


def file_eval_set(name: str, path: str, tracked: tuple[str, ...]) -> EvalSet:
    from holo_jax.fairness.scoring import identities_to_report, read_examples

    examples = read_examples(path)
    return _eval_set(name, os.path.abspath(path), examples, identities_to_report(examples, tracked))


def check_axes(axes: tuple[str, ...], sets: list[EvalSet]) -> None:
    """Every verdict axis is a known axis with members in every evaluation set."""
    import numpy as np

    from holo_jax.errors import HoloError
    from holo_jax.fairness.identities import AXES

    for axis in axes:
        if axis not in AXES:
            raise HoloError(f"--axes names `{axis}`, which is not an identity axis; choose from {', '.join(AXES)}.")
        for s in sets:
            present = [n for j, n in enumerate(s.identities) if n in AXES[axis] and np.asarray(s.membership)[:, j].any()]
            if not present:
                raise HoloError(f"the {axis} axis has no members in the {s.name} set ({s.source}): no example names "
                                f"any of {', '.join(AXES[axis])}; drop it from --axes or add such examples.")


# ----------------------------------------------------------------------------------------------
# step time, measured interleaved


def step_seconds(cfgs: dict, steps: int, rounds: int = 5) -> dict:
    """method -> {"median_s", "all_s"}: each method's compiled step on the same mesh and the same
    first batch, timed in rounds that alternate the methods (this machine is shared and noisy)."""
    import jax

    from holo_jax.data import make_tokenizer
    from holo_jax.parallel.grad_comm_plan import make_grad_comm, resolve_grad_comm
    from holo_jax.parallel.rules import batch_sharding
    from holo_jax.train.optimizer import learning_rate_schedule, make_optimizer
    from holo_jax.train.setup import mesh_for_run, process_rows, to_global
    from holo_jax.train.stages import build_stages
    from holo_jax.train.state import init_train_state
    from holo_jax.train.step import jit_train_step, make_train_step
    from holo_jax.train.tasks import make_task

    built = {}
    for method, cfg in cfgs.items():
        task = make_task(cfg.task)
        stages = build_stages(cfg.stages, task)
        mesh, _ = mesh_for_run(cfg.mesh, cfg.model, cfg.global_batch, cfg.microbatches,
                               grad_comm_scheme=cfg.grad_comm.scheme)
        grad_comm = make_grad_comm(resolve_grad_comm(cfg.grad_comm, mesh), mesh, cfg.seed)
        model_cfg = dataclasses.replace(cfg.model, remat="none" if cfg.model.remat in ("default", "auto")
                                        else cfg.model.remat)
        model = task.build_model(model_cfg)
        optimizer = make_optimizer(cfg.optim, cfg.steps)
        b, t = cfg.global_batch, cfg.model.max_len
        state, shardings = init_train_state(model, task.init_inputs(t), optimizer, stages, mesh, cfg.seed,
                                            grad_comm=grad_comm)
        shard_index, shard_count = process_rows(batch_sharding(mesh), b, t)
        data = task.open_batches(cfg, "train", make_tokenizer(cfg.data.tokenizer), shard_index=shard_index,
                                 shard_count=shard_count)
        batch = to_global(next(data), mesh, b)
        fn = jit_train_step(make_train_step(task, model, optimizer, learning_rate_schedule(cfg.optim, cfg.steps),
                                            stages, mesh, cfg.microbatches, grad_comm=grad_comm),
                            shardings, task.example_batch(b, t), mesh)
        built[method] = [fn, state, batch, mesh]
    times = {m: [] for m in built}

    def run(method: str, n: int) -> float:
        fn, state, batch, mesh = built[method]
        with jax.set_mesh(mesh):
            start = time.perf_counter()
            for _ in range(n):
                state, _, _ = fn(state, batch)
            jax.block_until_ready(state)
        built[method][1] = state
        return (time.perf_counter() - start) / n

    for method in built:  # compile and warm up
        run(method, 2)
    order = list(built)
    for r in range(rounds):
        for method in order[r % len(order):] + order[:r % len(order)]:
            times[method].append(run(method, steps))
    return {m: {"median_s": statistics.median(v), "all_s": v} for m, v in times.items()}


# ----------------------------------------------------------------------------------------------
# the report


def _explanations(classifiers: dict, s: EvalSet, n: int) -> dict:
    """Which identity words each seed-0 model's rules lean on, on the same `n` examples of set `s`."""
    import numpy as np

    from holo_jax.explain.identity import identity_reliance, identity_words

    take = np.sort(np.random.default_rng(0).permutation(len(s.texts))[:n])
    texts, member = [s.texts[i] for i in take], s.membership[take]
    lexicon = identity_words(texts, member, s.identities)
    models = {m: identity_reliance(c, texts, member, s.identities, lexicon=lexicon) for m, c in classifiers.items()}
    return {"set": s.name, "examples": len(texts), "identity_words": lexicon, "models": models}


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def markdown(report: dict) -> str:
    lines = ["# Debiasing report", "", f"Config: `{report['config_name']}`; seeds: {report['seeds']}; "
             f"methods: {', '.join(report['methods'])}.", ""]
    first = report["first_seed"]
    seeds = range(first, first + report["seeds"])
    for set_name, summary in report["summary"].items():
        lines += [f"## {set_name}: {report['sets'][set_name]}", ""]
        for method, s in summary.items():
            target = s["verdict"]["target"]
            lines += [f"### {method} against baseline: target {'met' if s['verdict']['met'] else 'NOT met'} "
                      f"(each of {', '.join(target['axes'])} reduced by >= {target['min_reduction']:.0%}, "
                      f"overall AUC lower by <= {target['max_auc_drop']})", "",
                      "| seed | axis | baseline gap | gap | reduction |", "|---|---|---|---|---|"]
            for seed, c in zip(seeds, s["per_seed"]):
                for axis, a in c["axes"].items():
                    lines.append(f"| {seed} | {axis} | {_fmt(a['baseline_gap'], 4)} | {_fmt(a['gap'], 4)} | "
                                 f"{_pct(a['reduction'])} |")
            lines += ["", "| seed | baseline AUC | AUC | drop |", "|---|---|---|---|"]
            for seed, c in zip(seeds, s["per_seed"]):
                lines.append(f"| {seed} | {_fmt(c['baseline_auc'], 4)} | {_fmt(c['auc'], 4)} | {_fmt(c['auc_drop'], 4)} |")
            if s["verdict"]["failures"]:
                lines += ["", "Failures: " + "; ".join(s["verdict"]["failures"]) + "."]
            lines.append("")
    if report.get("explanations"):
        e = report["explanations"]
        lines += [f"## Explanations (seed {first}, {e['set']}, {e['examples']} examples): the identity words the rules "
                  "lean on", "", "| model | toxic decisions naming an identity | their rules naming an identity "
                  "word | identity words in those rules | global rules naming one |", "|---|---|---|---|---|"]
        for method, m in e["models"].items():
            words = ", ".join(f"{w} ({c})" for w, c in list(m["identity_words_in_rules"].items())[:6]) or "none"
            lines.append(f"| {method} | {m['toxic_decisions_mentioning_identity']} | "
                         f"{_pct(m['share_of_their_rules_naming_identity_word'])} | {words} | "
                         f"{'; '.join(m['global_rules_naming_identity_word']) or 'none'} |")
        lines.append("")
    if report.get("step_time"):
        lines += ["## Step time (same mesh, interleaved rounds)", "", "| method | median s/step | x baseline |",
                  "|---|---|---|"]
        for method, t in report["step_time"].items():
            lines.append(f"| {method} | {t['median_s']:.4f} | {_fmt(t.get('ratio_to_baseline'), 2)} |")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    import holo_jax.fairness  # noqa: F401  (registers the stage kinds)
    from holo_jax.config import DataConfig
    from holo_jax.errors import HoloError
    from holo_jax.fairness import bias_report
    from holo_jax.fairness.comparison import Target, compare, verdict
    from holo_jax.fairness.plots import plot_axis
    from holo_jax.fairness.scoring import load_classifier
    from holo_jax.governance import log_report, run_sinks
    from holo_jax.train.jsonl import jsonable
    from holo_jax.train.loop import train
    from experiments.configs import debias as configs

    if args.seeds < 1:
        raise HoloError(f"--seeds must be at least 1, got {args.seeds}.")
    if args.first_seed < 0:
        raise HoloError(f"--first-seed must be 0 or more, got {args.first_seed}.")
    if args.explain_examples < 0:
        raise HoloError(f"--explain-examples must be 0 (skip) or more, got {args.explain_examples}.")
    if args.timing_steps < 0:
        raise HoloError(f"--timing-steps must be at least 0, got {args.timing_steps}.")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or "baseline" not in methods or len(set(methods)) != len(methods):
        raise HoloError(f"--methods {args.methods} must list baseline and any of {', '.join(METHOD_STAGES)}, each "
                        "once.")
    axes = tuple(a.strip() for a in args.axes.split(",") if a.strip())
    if not axes:
        raise HoloError("--axes is empty; name at least one axis, e.g. --axes gender,religion.")
    if bool(args.train) != bool(args.eval):
        raise HoloError("--train and --eval go together: give both (your training and evaluation .jsonl files) or "
                        "neither (the embedded set).")

    base = configs.get(args.config)
    if args.train:
        base = dataclasses.replace(base, data=DataConfig(source="files", paths=(args.train,)))
    # The data and every setting are checked, and the evaluation sets read, before any training.
    first = method_configs(base, args.set, methods, seed=args.first_seed)
    tracked = first["baseline"].task.identities
    if args.train:
        sets = [file_eval_set("eval", args.eval, tracked)]
    elif first["baseline"].data.source == "embedded":
        sets = embedded_eval_sets(tracked)
    else:
        raise HoloError(f"without --train/--eval the comparison runs on the embedded set, but data.source is "
                        f"{first['baseline'].data.source}; give --train and --eval files instead.")
    if args.heldout:
        sets = [s for s in sets if s.name != "heldout"] + [file_eval_set("heldout", args.heldout, tracked)]
    check_axes(axes, sets)
    target = Target(axes=axes)

    workdir = Path(args.workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    reports = {s.name: {m: [] for m in methods} for s in sets}
    runs = []
    seed0 = {}
    for k in range(args.seeds):
        seed = args.first_seed + k  # the runs' `seed`; k only names their directory (run_dir)
        cfgs = first if k == 0 else method_configs(base, args.set, methods, seed=seed)
        for method, cfg in cfgs.items():
            directory = run_dir(workdir, k, method)
            started = time.perf_counter()
            # Each run keeps its own audit log; the before-training gate is checked before it trains.
            sinks = run_sinks(directory, cfg.to_dict(), policy=args.policy, signing_key=args.signing_key,
                              audit=not args.no_audit)
            result = train(cfg, directory, sinks=sinks)
            if result.stopped_early:
                raise HoloError(f"the {method} run of seed {seed} stopped at step {result.final_step} ({result.reason}); "
                                "run the same command again to resume it.")
            classifier = load_classifier(directory, batch_size=64)
            if k == 0:
                seed0[method] = classifier  # explained below, already compiled
            for s in sets:
                scores = classifier.score(s.texts)
                reports[s.name][method].append(bias_report(s.labels, scores, s.membership, s.identities,
                                                           bootstrap=BOOTSTRAP, seed=seed).to_dict())
            # The run's own bias report on the first set, in its workdir and logged there by digest:
            # what `python -m holo_jax.governance release` reads as `reports.fairness`.
            own = directory / f"fairness_{sets[0].name}.json"
            _write_atomic(own, json.dumps(jsonable(reports[sets[0].name][method][-1]), allow_nan=False, indent=1) + "\n")
            if not args.no_audit:
                log_report(directory, "fairness", own, signing_key=args.signing_key, set=sets[0].name,
                           source=sets[0].source)
            runs.append({"seed": seed, "method": method, "workdir": str(directory), "steps": result.final_step,
                         "seconds": time.perf_counter() - started})
            print(f"seed {seed} {method}: done ({directory})", file=sys.stderr, flush=True)

    summary = {}
    for s in sets:
        summary[s.name] = {}
        for method in methods:
            if method == "baseline":
                continue
            per_seed = [compare(b, t) for b, t in zip(reports[s.name]["baseline"], reports[s.name][method])]
            summary[s.name][method] = {"per_seed": per_seed, "verdict": verdict(per_seed, target)}
    explanations = _explanations(seed0, sets[0], args.explain_examples) if args.explain_examples else {}
    timing = step_seconds(first, args.timing_steps) if args.timing_steps else {}
    for t in timing.values():
        t["ratio_to_baseline"] = t["median_s"] / timing["baseline"]["median_s"]
    report = {"config_name": args.config, "config": first["baseline"].to_dict(), "seeds": args.seeds,
              "first_seed": args.first_seed,
              "methods": list(methods), "axes": list(axes), "sets": {s.name: s.source for s in sets},
              "target": target.to_dict(), "summary": summary, "explanations": explanations, "step_time": timing,
              "runs": runs,
              "reports": reports}
    _write_atomic(workdir / "report.json", json.dumps(jsonable(report), allow_nan=False, indent=1) + "\n")
    report_md = markdown(report)
    _write_atomic(workdir / "report.md", report_md)
    for s in sets:
        first_seed = {m: reports[s.name][m][0] for m in methods}
        for axis in sorted({a["axis"] for r in first_seed.values() for a in r["axes"]}):
            plot_axis(first_seed, axis, workdir / f"{s.name}_{axis}.png", title=f"{s.name}: {axis} (seed {args.first_seed})")
    if args.json:
        out = {"workdir": str(workdir), "summary": summary, "step_time": timing}
        print(json.dumps(jsonable(out), allow_nan=False), flush=True)
    else:
        print(report_md, flush=True)
    return 0


if __name__ == "__main__":
    from holo_jax.errors import exit_on_user_error

    sys.exit(exit_on_user_error(main, hard_exit=True)())
