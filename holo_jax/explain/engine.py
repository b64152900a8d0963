"""The explanation of a dataset end to end: attributions, local rules (with the rule engine's own
word relevance, `symbolic`), the global decision list mined on one part of the data and measured on
the other, faithfulness of every method, and the latency of the local rule.

Scoring (rule search, perturbation checks, faithfulness) runs the restored classifier's own forward
(the one `experiments.fairness_eval --scores-out` uses; length-bucketed, holo_jax.explain.scoring),
so every figure can be recomputed from `--explanations-out` with that command.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Sequence

import numpy as np

from holo_jax.errors import HoloError
from holo_jax.explain.attribution import METHODS, Attributor
from holo_jax.explain.scoring import BucketedScorer
from holo_jax.explain.rules import (
    DEFAULT_CANDIDATES, DEFAULT_MAX_WORDS, DEFAULT_PRECISION_TARGET, DEFAULT_SAMPLES, LocalRule, check_rules,
    construct_rules, decisions_of, evaluate_decision_list, mine_decision_list, normalised_words,
    query_texts, relevance_pool, symbolic_relevance,
    DEFAULT_MIN_SUPPORT, DEFAULT_PAIR_WORDS, DEFAULT_POOL, DEFAULT_QUERIES, DEFAULT_RULE_PRECISIONS,
    DEFAULT_VALIDATION_FRACTION,
)

ALL_METHODS = METHODS + ("symbolic",)
RULE_RELEVANCE = "grad_attention_rollout"


@dataclasses.dataclass(frozen=True)
class RuleSettings:
    relevance: str = RULE_RELEVANCE  # the attention-derived relevance the rules start from
    candidates: int = DEFAULT_CANDIDATES
    max_words: int = DEFAULT_MAX_WORDS
    samples: int = DEFAULT_SAMPLES
    precision_target: float = DEFAULT_PRECISION_TARGET
    seed: int = 0

    def check(self) -> None:
        if self.relevance not in METHODS or self.relevance == "random":
            raise HoloError(f"the rule relevance `{self.relevance}` is not an attribution method; choose one of "
                            f"{', '.join(m for m in METHODS if m != 'random')}.")
        for name in ("candidates", "max_words", "samples"):
            if getattr(self, name) < 1:
                raise HoloError(f"the rule setting {name} must be at least 1, got {getattr(self, name)}.")
        if not 0.0 < self.precision_target <= 1.0:
            raise HoloError(f"the precision target must be in (0, 1], got {self.precision_target}.")


@dataclasses.dataclass
class Explanations:
    texts: list[str]
    words: list[list[str]]
    probability: np.ndarray  # P(label 1) by Classifier.score, the decision's source
    decisions: np.ndarray  # int8
    relevance: dict[str, list[np.ndarray]]  # every method of ALL_METHODS
    rules: list[LocalRule]
    ig_completeness_error: np.ndarray | None
    ig_target_delta: np.ndarray | None
    seconds: dict[str, float]

    def line(self, i: int) -> dict:
        """The `--explanations-out` record of example i."""
        return {"words": self.words[i], "relevance": {m: [float(v) for v in self.relevance[m][i]]
                                                      for m in self.relevance},
                "rule": self.rules[i].text(), "precision": self.rules[i].precision,
                "meets_target": self.rules[i].meets_target, "probability": float(self.probability[i])}


def scorer(classifier, batch_size: int) -> BucketedScorer:
    """The classifier's forward for many texts: batches of `batch_size`, length-bucketed."""
    return BucketedScorer(classifier, batch_size)


def explain_texts(classifier, attributor: Attributor, texts: Sequence[str], settings: RuleSettings = RuleSettings(),
                  *, methods: Sequence[str] = METHODS, score_batch: int = 64, check: bool = True) -> Explanations:
    """Attributions of every method, the local rules (checked under perturbation unless
    `check=False`) and the rule engine's relevance, for each text in order."""
    settings.check()
    methods = tuple(m for m in METHODS if m in set(methods) | {settings.relevance})
    score = scorer(classifier, score_batch)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    probability = score(list(texts))
    decisions = decisions_of(probability)
    t1 = time.perf_counter()
    attributions = attributor.explain(texts, methods)
    t2 = time.perf_counter()
    words = attributions.words
    _, search = construct_rules(words, attributions.relevance[settings.relevance], decisions, score,
                                candidates=settings.candidates, max_words=settings.max_words)
    t3 = time.perf_counter()
    if check:
        rules = check_rules(search, score, samples=settings.samples, precision_target=settings.precision_target,
                            max_words=settings.max_words, seed=settings.seed)
    else:
        rules = search.rules()
    t4 = time.perf_counter()
    relevance = dict(attributions.relevance)
    relevance["symbolic"] = [symbolic_relevance(r, b) for r, b in zip(rules, relevance[settings.relevance])]
    seconds.update(score=t1 - t0, attributions=t2 - t1, rule_construction=t3 - t2, rule_checks=t4 - t3)
    return Explanations(list(texts), words, np.asarray(probability, np.float32), decisions, relevance, rules,
                        attributions.ig_completeness_error, attributions.ig_target_delta, seconds)


def split_indices(n: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of 0..n-1 into (mining, held-out), each sorted."""
    if not 0.0 < holdout_fraction < 1.0:
        raise HoloError(f"--holdout-fraction must be between 0 and 1 (exclusive), got {holdout_fraction}.")
    order = np.random.default_rng(seed).permutation(n)
    k = int(round(n * holdout_fraction))
    if k < 1 or k >= n:
        raise HoloError(f"{n} examples cannot be split into a mining and a held-out part with --holdout-fraction "
                        f"{holdout_fraction}; give more examples (at least 2).")
    return np.sort(order[k:]), np.sort(order[:k])


def global_rules(expl: Explanations, *, holdout_fraction: float = 0.5, seed: int = 0,
                 rule_precision: float | Sequence[float] = DEFAULT_RULE_PRECISIONS,
                 min_support: int = DEFAULT_MIN_SUPPORT,
                 max_rules: int | None = None, pool: int = DEFAULT_POOL, pair_words: int = DEFAULT_PAIR_WORDS,
                 queries: int = DEFAULT_QUERIES, validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
                 score=None, relevance: str = RULE_RELEVANCE) -> tuple[dict, object]:
    """The decision list mined on the mining part (and, given `score`, the model's decisions on
    `queries` variants of each mining text) and its evaluation on the held-out part."""
    mining, heldout = split_indices(len(expl.texts), holdout_fraction, seed)
    norm = [normalised_words(w) for w in expl.words]
    mining_words = [expl.words[i] for i in mining]
    mining_relevance = [expl.relevance[relevance][i] for i in mining]
    # One ranking of every word and adjacent pair serves both: the pool is its head, the pair words
    # its most relevant single words.
    ranked = relevance_pool(mining_words, mining_relevance, 10 ** 9)
    extra = ranked[:pool]
    words = [p for (p,) in ranked if " " not in p][:pair_words]
    queried = None
    if queries and score is not None:
        variants, source = query_texts(mining_words, queries, seed)
        if variants:
            queried = ([normalised_words(v) for v in variants], decisions_of(score([" ".join(v) for v in variants])),
                       source)
    info: dict = {}
    dlist = mine_decision_list([expl.rules[i] for i in mining], [norm[i] for i in mining], expl.decisions[mining],
                               rule_precision=rule_precision, min_support=min_support, max_rules=max_rules,
                               extra=extra, pair_words=words, validation_fraction=validation_fraction, seed=seed,
                               info=info, queried=queried)
    report = evaluate_decision_list(dlist, [norm[i] for i in heldout], expl.decisions[heldout],
                                    expl.decisions[mining])
    mining_eval = evaluate_decision_list(dlist, [norm[i] for i in mining], expl.decisions[mining],
                                         expl.decisions[mining])
    report = {"n_mining": int(len(mining)), **report, "n_rules": len(dlist.rules),
              "mining_fidelity": mining_eval["fidelity"], "mining_coverage": mining_eval["coverage"],
              "mining": {"n_queried": int(len(queried[0])) if queried else 0, "queries_per_text": queries,
                         "n_candidates": info.get("n_candidates"), "n_validation": info.get("n_validation"),
                         "validation_fidelity": info.get("validation_fidelity"),
                         "rule_precision": info.get("rule_precision"), "min_support": min_support,
                         "max_rules": max_rules}}
    return report, dlist


def local_rule_summary(rules: Sequence[LocalRule], precision_target: float) -> dict:
    checked = [r for r in rules if r.precision is not None]
    precision = np.asarray([r.precision for r in checked]) if checked else np.zeros(0)
    return {
        "n": len(rules),
        "precision_target": precision_target,
        "mean_precision": float(precision.mean()) if len(precision) else None,
        "median_precision": float(np.median(precision)) if len(precision) else None,
        "share_meeting_target": float(np.mean([r.meets_target for r in checked])) if checked else None,
        "share_holding": float(np.mean([r.holds for r in rules])) if rules else None,
        "mean_words": float(np.mean([len(r.positions) for r in rules])) if rules else None,
    }


def measure_latency(classifier, texts: Sequence[str], settings: RuleSettings, *, repeats: int = 3,
                    warmup: int = 2) -> dict:
    """Per-example seconds at batch 1 on one device: the local rule without perturbation checks
    (score the text, its rule relevance, the greedy construction), and the checks separately.
    Warm (every shape compiled first); the median and 90th percentile over examples x repeats."""
    attributor = Attributor(classifier, batch_size=1, seed=settings.seed)
    build_score = scorer(classifier, settings.candidates)  # one construction round scores <= candidates texts
    check_score = scorer(classifier, settings.samples)  # one check round scores `samples` texts
    one = scorer(classifier, 1)

    def construct(text: str):
        p = one([text])
        d = decisions_of(p)
        a = attributor.explain([text], (settings.relevance,))
        _, search = construct_rules(a.words, a.relevance[settings.relevance], d, build_score,
                                    candidates=settings.candidates, max_words=settings.max_words)
        return search

    def checks(search) -> None:
        check_rules(search, check_score, samples=settings.samples,
                    precision_target=settings.precision_target, max_words=settings.max_words, seed=settings.seed)

    for s in (build_score, check_score, one):
        s.compile_all()
    for text in list(texts)[:warmup]:
        checks(construct(text))
    build, check_times = [], []
    for _ in range(repeats):
        for text in texts:
            t0 = time.perf_counter()
            search = construct(text)
            t1 = time.perf_counter()
            checks(search)
            t2 = time.perf_counter()
            build.append(t1 - t0)
            check_times.append(t2 - t1)
    pct = lambda xs, q: float(np.percentile(xs, q))  # noqa: E731
    return {"examples": len(texts), "repeats": repeats,
            "local_rule_ms_median": 1e3 * statistics.median(build), "local_rule_ms_p90": 1e3 * pct(build, 90),
            "perturbation_checks_ms_median": 1e3 * statistics.median(check_times),
            "perturbation_checks_ms_p90": 1e3 * pct(check_times, 90),
            "target_ms": 50.0, "target_met": 1e3 * statistics.median(build) < 50.0}


__all__ = ["ALL_METHODS", "Explanations", "RuleSettings", "explain_texts", "global_rules",
           "local_rule_summary", "measure_latency", "scorer", "split_indices"]
