"""The symbolic engine: attention-derived relevance turned into rules, local and global.

**Local rule** of one input (in the manner of Anchors, Ribeiro et al. 2018): the smallest set of
the text's words whose presence alone keeps the model's decision, as
`IF contains("...") AND contains("...") THEN toxic` (adjacent words form one phrase).

1. *Construction* (no perturbation sampling; this is what the latency target covers). The
   candidates are the `candidates` words the attention-derived relevance (default: Chefer et al.'s
   gradient-weighted rollout) ranks highest. Greedily, round by round, every remaining candidate is
   added to the rule in turn, each "keep only the rule's words" text is scored (all candidates of
   all examples in one batched call), and the candidate that most supports the decision is kept;
   it stops once the kept words alone give the model's decision (`holds`), or after `max_words`.
2. *Precision check* (reported separately): `samples` perturbations per example, each keeping the
   rule's words and every other word independently with probability 1/2 (Anchors' D(z | A) with
   deletion, holo_jax.explain.words' rule), scored in one batched call; precision = the share
   that keeps the decision. Below `precision_target` the rule is extended by the next greedy
   word and checked again (one batched call per round for all examples), up to `max_words`; a
   rule that still misses the target says so (`meets_target: false`), it is never passed off.

**Global rules**: a decision list mined from the local rules of the mining examples (each local
rule's conjunction and each of its predicates are candidates, plus the words and word pairs with the
most attention-derived relevance over the mining texts, `relevance_pool`). Greedy sequential covering (as
CN2 / Anchors' submodular pick): take the candidate that correctly covers the most still-uncovered
examples among those with precision >= `rule_precision` and support >= `min_support`, remove what
it covers, repeat; the default class is the uncovered examples' majority decision. Matching uses
normalised words (holo_jax.explain.words.normalise). Fidelity, coverage and each rule's precision
are measured on held-out examples against the model's decisions, and simulatability as Hase &
Bansal 2020's forward simulation: how well a reader who knows only the rules predicts the model's
decisions on new inputs, against a reader who knows only its most common decision.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Callable, Sequence

import numpy as np

from holo_jax.explain.words import keep_words, normalise

Scorer = Callable[[Sequence[str]], np.ndarray]  # texts -> P(label 1), e.g. Classifier.score
CLASS_NAMES = ("not_toxic", "toxic")
DEFAULT_CANDIDATES = 8
DEFAULT_MAX_WORDS = 5
DEFAULT_SAMPLES = 64
DEFAULT_PRECISION_TARGET = 0.9


def decisions_of(probabilities: np.ndarray) -> np.ndarray:
    """int8 decisions: 1 where P(label 1) >= 0.5 (argmax of a binary softmax)."""
    return (np.asarray(probabilities) >= 0.5).astype(np.int8)


def _support(p: np.ndarray, decision: np.ndarray) -> np.ndarray:
    """Probability of the decided class."""
    return np.where(decision == 1, p, 1.0 - p)


# --- local rules ---------------------------------------------------------------------------------

@dataclasses.dataclass
class LocalRule:
    positions: list[int]  # word positions in the order the rule took them
    phrases: list[str]  # normalised phrases (adjacent positions joined), in text order
    decision: int
    holds: bool  # the rule's words alone give the decision
    precision: float | None = None  # under perturbation (None: not checked)
    samples: int = 0
    meets_target: bool | None = None

    def text(self) -> str:
        then = CLASS_NAMES[self.decision]
        if not self.phrases:
            return f"IF true THEN {then}"
        return "IF " + " AND ".join(f"contains({json.dumps(p, ensure_ascii=False)})" for p in self.phrases) + \
            f" THEN {then}"

    def to_dict(self) -> dict:
        return {"rule": self.text(), "positions": self.positions, "phrases": self.phrases,
                "decision": CLASS_NAMES[self.decision], "holds": self.holds, "precision": self.precision,
                "samples": self.samples, "meets_target": self.meets_target}


def phrases_of(words: Sequence[str], positions: Sequence[int]) -> list[str]:
    """Normalised phrases of the chosen positions: runs of adjacent positions become one phrase;
    words that normalise to nothing (pure punctuation) are left out of the phrase."""
    out: list[list[str]] = []
    last = None
    for i in sorted(positions):
        w = normalise(words[i])
        if not w:
            continue
        if last is not None and i == last + 1 and out:
            out[-1].append(w)
        else:
            out.append([w])
        last = i
    return [" ".join(p) for p in out]


def _candidates(words: Sequence[str], relevance: np.ndarray, k: int) -> list[int]:
    """The k most relevant positions (ties: earlier first) among words that normalise to something."""
    order = [int(i) for i in np.argsort(-np.asarray(relevance, np.float64), kind="stable")]
    usable = [i for i in order if normalise(words[i])]
    return (usable or order)[:k]


class RuleSearch:
    """State of the greedy construction for many examples at once."""

    def __init__(self, words, relevance, decisions, candidates):
        self.words, self.decisions = words, decisions
        self.pool = [_candidates(w, r, candidates) for w, r in zip(words, relevance)]
        self.chosen: list[list[int]] = [[] for _ in words]
        self.holds = [False] * len(words)

    def round(self, active: Sequence[int], score: Scorer) -> list[int]:
        """One greedy step for `active` examples (one batched scoring call); returns those that
        took a word (the others had no candidate left)."""
        texts, owners = [], []
        for i in active:
            for w in self.pool[i]:
                if w not in self.chosen[i]:
                    texts.append(keep_words(self.words[i], self.chosen[i] + [w]))
                    owners.append((i, w))
        if not texts:
            return []
        support = _support(score(texts), np.asarray([self.decisions[i] for i, _ in owners]))
        best: dict[int, tuple[float, int]] = {}
        for (i, w), s in zip(owners, support):
            if i not in best or s > best[i][0]:  # first (most relevant) wins ties
                best[i] = (float(s), w)
        for i, (s, w) in best.items():
            self.chosen[i].append(w)
            self.holds[i] = s > 0.5
        return list(best)

    def rules(self) -> list[LocalRule]:
        """The rules as they stand (precision unchecked)."""
        return [LocalRule(positions=list(c), phrases=phrases_of(w, c), decision=int(d), holds=bool(h))
                for w, c, d, h in zip(self.words, self.chosen, self.decisions, self.holds)]


def construct_rules(words: Sequence[Sequence[str]], relevance: Sequence[np.ndarray], decisions: np.ndarray,
                    score: Scorer, *, candidates: int = DEFAULT_CANDIDATES,
                    max_words: int = DEFAULT_MAX_WORDS) -> tuple[list[LocalRule], RuleSearch]:
    """Step 1 (no perturbations): each example's greedy rule, from its relevance ranking."""
    search = RuleSearch(words, relevance, decisions, candidates)
    active = [i for i, w in enumerate(words) if len(w)]
    for _ in range(max_words):
        took = search.round(active, score)
        active = [i for i in took if not search.holds[i]]
        if not active:
            break
    # A text without words: the rule is empty; it "holds" if the empty text gives the decision.
    empty = [i for i, w in enumerate(words) if not len(w)]
    if empty:
        p = _support(score([""] * len(empty)), np.asarray([decisions[i] for i in empty]))
        for i, s in zip(empty, p):
            search.holds[i] = bool(s > 0.5)
    return search.rules(), search


def perturbations(words: Sequence[str], kept: Sequence[int], samples: int, rng: np.random.Generator) -> list[str]:
    """`samples` texts keeping `kept` and each other word with probability 1/2."""
    n = len(words)
    keep = rng.random((samples, n)) < 0.5
    keep[:, list(kept)] = True
    return [" ".join(w for w, k in zip(words, row) if k) for row in keep]


def check_rules(search: RuleSearch, score: Scorer, *, samples: int = DEFAULT_SAMPLES,
                precision_target: float = DEFAULT_PRECISION_TARGET, max_words: int = DEFAULT_MAX_WORDS,
                seed: int = 0, first_index: int = 0) -> list[LocalRule]:
    """Step 2: precision under perturbation, extending rules below the target (see the module doc)."""
    n = len(search.words)
    precision = np.full(n, np.nan)
    pending = list(range(n))
    while pending:
        texts, owners = [], []
        for i in pending:
            rng = np.random.default_rng([seed, first_index + i, len(search.chosen[i])])
            batch = perturbations(search.words[i], search.chosen[i], samples, rng)
            texts += batch
            owners += [i] * len(batch)
        kept = decisions_of(score(texts)) == np.asarray([search.decisions[i] for i in owners])
        owners = np.asarray(owners)
        for i in pending:
            precision[i] = float(kept[owners == i].mean())
        short = [i for i in pending if precision[i] < precision_target and len(search.chosen[i]) < max_words]
        pending = search.round(short, score) if short else []
    rules = search.rules()
    for i, rule in enumerate(rules):
        rule.precision, rule.samples = float(precision[i]), samples
        rule.meets_target = bool(precision[i] >= precision_target)
    return rules


def symbolic_relevance(rule: LocalRule, base: np.ndarray) -> np.ndarray:
    """The rule engine's word relevance: the rule's words first (in the order the rule took them,
    scores in (1, 2]), then the other words in the order of the relevance the engine started from
    (rescaled into [0, 1)), so top-k deletion takes the rule first and the rest after it."""
    n = len(base)
    out = np.zeros(n, np.float32)
    if n:
        b = np.asarray(base, np.float64)
        span = b.max() - b.min()
        out[:] = 0.999 * (b - b.min()) / span if span > 0 else 0.0
        k = len(rule.positions)
        for rank, i in enumerate(rule.positions):
            out[i] = 1.0 + (k - rank) / k
    return out


# --- global rules --------------------------------------------------------------------------------

def normalised_words(text_words: Sequence[str]) -> tuple[str, ...]:
    return tuple(w for w in (normalise(x) for x in text_words) if w)


def contains(norm_words: tuple[str, ...], phrase: str) -> bool:
    """Whether the phrase's words occur contiguously in the normalised words."""
    target = tuple(phrase.split(" "))
    k = len(target)
    return any(norm_words[j:j + k] == target for j in range(len(norm_words) - k + 1))


@dataclasses.dataclass
class GlobalRule:
    phrases: tuple[str, ...]
    decision: int
    mining_precision: float
    mining_coverage: float

    def text(self) -> str:
        return "IF " + " AND ".join(f"contains({json.dumps(p, ensure_ascii=False)})" for p in self.phrases) + \
            f" THEN {CLASS_NAMES[self.decision]}"


@dataclasses.dataclass
class DecisionList:
    rules: list[GlobalRule]
    default: int

    def matrix(self, norm_texts: Sequence[tuple[str, ...]]) -> np.ndarray:
        """bool [rules, n]: rule r's conditions hold in text i."""
        cache: dict[str, np.ndarray] = {}
        out = np.zeros((len(self.rules), len(norm_texts)), bool)
        for r, rule in enumerate(self.rules):
            m = np.ones(len(norm_texts), bool)
            for p in rule.phrases:
                if p not in cache:
                    cache[p] = np.asarray([contains(t, p) for t in norm_texts], bool)
                m &= cache[p]
            out[r] = m
        return out

    def first_match(self, norm_texts: Sequence[tuple[str, ...]]) -> np.ndarray:
        """int [n]: index of the first rule that fires, or -1 (the default)."""
        m = self.matrix(norm_texts)
        if not len(self.rules):
            return np.full(len(norm_texts), -1)
        return np.where(m.any(0), m.argmax(0), -1)

    def predict(self, norm_texts: Sequence[tuple[str, ...]]) -> np.ndarray:
        first = self.first_match(norm_texts)
        classes = np.asarray([r.decision for r in self.rules] + [self.default], np.int8)
        return classes[first]  # -1 indexes the default

    def text(self) -> str:
        lines = [f"{k + 1}. {r.text()}" for k, r in enumerate(self.rules)]
        return "\n".join(lines + [f"{len(self.rules) + 1}. ELSE {CLASS_NAMES[self.default]}"])


def relevance_pool(words: Sequence[Sequence[str]], relevance: Sequence[np.ndarray], size: int) -> list[tuple[str]]:
    """The `size` normalised words and adjacent word pairs with the largest relevance summed over
    the texts (a pair counts the smaller of its two words'): the dataset-level view of the same
    attention-derived relevance the local rules start from, as extra one-phrase candidates."""
    total: dict[str, float] = {}
    for ws, rel in zip(words, relevance):
        norm = [normalise(w) for w in ws]
        for j, w in enumerate(norm):
            if not w:
                continue
            total[w] = total.get(w, 0.0) + float(rel[j])
            if j + 1 < len(norm) and norm[j + 1]:
                pair = f"{w} {norm[j + 1]}"
                total[pair] = total.get(pair, 0.0) + float(min(rel[j], rel[j + 1]))
    ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
    return [(phrase,) for phrase, _ in ranked]


def mine_decision_list(local: Sequence[LocalRule], norm_texts: Sequence[tuple[str, ...]], decisions: np.ndarray, *,
                       rule_precision: float = DEFAULT_PRECISION_TARGET, min_support: int = 3,
                       max_rules: int = 60, extra: Sequence[tuple[str, ...]] = ()) -> DecisionList:
    """Sequential covering over the candidates the local rules give, plus `extra` ones (module doc)."""
    decisions = np.asarray(decisions, np.int8)
    n = len(norm_texts)
    candidates: dict[tuple[str, ...], None] = dict.fromkeys(tuple(sorted(c)) for c in extra)
    for rule in local:
        if rule.phrases:
            candidates[tuple(sorted(rule.phrases))] = None
            for p in rule.phrases:
                candidates[(p,)] = None
    phrase_mask: dict[str, np.ndarray] = {}
    for cand in candidates:
        for p in cand:
            if p not in phrase_mask:
                phrase_mask[p] = np.asarray([contains(t, p) for t in norm_texts], bool)
    names = list(candidates)
    masks = np.stack([np.logical_and.reduce([phrase_mask[p] for p in c]) for c in names]) if names else \
        np.zeros((0, n), bool)
    remaining = np.ones(n, bool)
    chosen: list[GlobalRule] = []
    while len(chosen) < max_rules and remaining.any() and len(names):
        cov = masks & remaining
        n_cov = cov.sum(1)
        pos = (cov & (decisions == 1)).sum(1)
        cls = (pos * 2 >= n_cov).astype(np.int8)  # majority decision (ties: toxic)
        correct = np.where(cls == 1, pos, n_cov - pos)
        prec = np.where(n_cov > 0, correct / np.maximum(n_cov, 1), 0.0)
        ok = (n_cov >= min_support) & (prec >= rule_precision)
        if not ok.any():
            break
        # Most examples covered correctly; then higher precision; then fewer conditions.
        key = np.where(ok, correct * 1e6 + prec * 1e3 - np.asarray([len(c) for c in names]), -np.inf)
        best = int(np.argmax(key))
        chosen.append(GlobalRule(phrases=names[best], decision=int(cls[best]), mining_precision=float(prec[best]),
                                 mining_coverage=float(n_cov[best] / n)))
        remaining &= ~masks[best]
    rest = decisions[remaining] if remaining.any() else decisions
    default = int(rest.mean() >= 0.5) if len(rest) else 0
    return DecisionList(chosen, default)


def evaluate_decision_list(dlist: DecisionList, norm_texts: Sequence[tuple[str, ...]], decisions: np.ndarray,
                           mining_decisions: np.ndarray) -> dict:
    """Held-out fidelity, coverage, per-rule precision/coverage (first match) and simulatability."""
    decisions = np.asarray(decisions, np.int8)
    n = len(norm_texts)
    first = dlist.first_match(norm_texts)
    predicted = dlist.predict(norm_texts)
    per_rule = []
    for r, rule in enumerate(dlist.rules):
        hit = first == r  # precision and coverage among the examples this rule is the first to match
        per_rule.append({"rule": rule.text(), "decision": CLASS_NAMES[rule.decision],
                         "precision": float((decisions[hit] == rule.decision).mean()) if hit.any() else None,
                         "coverage": float(hit.mean()) if n else None, "mining_precision": rule.mining_precision,
                         "mining_coverage": rule.mining_coverage})
    covered = first >= 0
    fidelity = float((predicted == decisions).mean()) if n else float("nan")
    majority = int(np.asarray(mining_decisions).mean() >= 0.5)
    without = float((decisions == majority).mean()) if n else float("nan")
    return {
        "n_heldout": n,
        "fidelity": fidelity,
        "coverage": float(covered.mean()) if n else float("nan"),
        "precision_covered": float((predicted[covered] == decisions[covered]).mean()) if covered.any() else None,
        "simulatability": {"with_rules": fidelity, "without_rules": without, "gain": fidelity - without,
                           "baseline": f"always {CLASS_NAMES[majority]} (the mining split's majority decision)"},
        "rules": per_rule,
        "default": CLASS_NAMES[dlist.default],
        "text": dlist.text(),
    }
