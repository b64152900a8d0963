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

**Global rules**: a decision list (`IF contains(...) AND ... THEN class`, first match wins, then
ELSE the default) learnt to reproduce the model's decisions on the mining examples.

1. *Candidates*, all from the attention-derived relevance: each local rule's conjunction, each of
   its predicates and each pair of them; the `relevance_pool` words and adjacent word pairs with the
   most relevance summed over the mining texts; and the conjunction of every two of the
   `pair_words` most relevant single words. No negations. Matching is vectorised (every n-gram of
   every text looked up once; a candidate is the sorted list of texts it matches).
2. *Queried data* (optional, as TREPAN queries its network, Craven & Shavlik 1996): `query_texts`
   makes variants of each mining text by swapping one word for another word some mining text has
   between the same two neighbours; the model decides them, and they join the mining data (never
   the validation part below, nor the held-out evaluation).
3. *Growth* (a greedy decision-list learner): each step appends the candidate, of either class (its
   majority decision among the examples no earlier rule covers), with the largest gain
   `correct - rule_precision x covered` among those examples, i.e. the most correctly decided
   examples beyond the precision a rule must have; support >= `min_support`. It stops when no
   candidate gains. The default after every prefix is the majority decision of what that prefix
   leaves uncovered (the best default for fidelity).
4. *Length* (no cap by default): the list is grown on (1 - `validation_fraction`) of the mining
   examples, for each `rule_precision` of a small grid; the (precision, prefix) with the best
   fidelity on the validation part (shortest on ties) is kept; the list is then re-grown on all
   mining examples with that precision, up to that length.

Matching uses normalised words (holo_jax.explain.words.normalise). A rule's `mining_precision`
and `mining_coverage` are over the mining examples and their queried variants. Fidelity, coverage
and each rule's precision are measured on held-out examples against the model's decisions, and simulatability as Hase &
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


DEFAULT_RULE_PRECISIONS = (0.7, 0.75, 0.8, 0.85, 0.9)  # a global rule's least precision, chosen by validation
DEFAULT_QUERIES = 8  # queried variants per mining text
DEFAULT_MIN_SUPPORT = 3
DEFAULT_VALIDATION_FRACTION = 0.25
DEFAULT_PAIR_WORDS = 40
DEFAULT_POOL = 1000


def phrase_index(norm_texts: Sequence[tuple[str, ...]], phrases: Sequence[str]) -> list[np.ndarray]:
    """For each phrase, the sorted indices of the texts that contain it (`contains`, vectorised by
    looking every n-gram of every text up once)."""
    where = {p: k for k, p in enumerate(phrases)}
    longest = max((len(p.split(" ")) for p in phrases), default=0)
    hits: list[list[int]] = [[] for _ in phrases]
    for i, t in enumerate(norm_texts):
        seen: set[int] = set()
        for j in range(len(t)):
            for k in range(1, min(longest, len(t) - j) + 1):
                q = where.get(" ".join(t[j:j + k]))
                if q is not None and q not in seen:
                    seen.add(q)
                    hits[q].append(i)
    return [np.asarray(h, np.int64) for h in hits]


def candidate_rules(local: Sequence[LocalRule], extra: Sequence[tuple[str, ...]] = (),
                    pair_words: Sequence[str] = ()) -> list[tuple[str, ...]]:
    """The conditions a global rule may have, all drawn from the attention-derived relevance: each
    local rule's conjunction, each of its predicates and each pair of them; the `extra` ones (the
    relevance pool); and the conjunction of every two of the `pair_words` (the most relevant words)."""
    out: dict[tuple[str, ...], None] = dict.fromkeys(tuple(sorted(set(c))) for c in extra)
    for rule in local:
        ps = sorted(set(rule.phrases))
        if not ps:
            continue
        out[tuple(ps)] = None
        for a, p in enumerate(ps):
            out[(p,)] = None
            for q in ps[a + 1:]:
                out[(p, q)] = None
    words = sorted(set(pair_words))
    for a, p in enumerate(words):
        for q in words[a + 1:]:
            out[(p, q)] = None
    return [c for c in out if c]


class _Cover:
    """Candidates x texts as a CSR-like incidence (numpy only): counts of any weight vector over each
    candidate's texts in one call."""

    def __init__(self, names: list[tuple[str, ...]], rows: list[np.ndarray], n: int):
        keep = [k for k, r in enumerate(rows) if len(r)]
        self.names = [names[k] for k in keep]
        self.rows = [rows[k] for k in keep]
        self.size = np.asarray([len(c) for c in self.names])
        self.indptr = np.concatenate([[0], np.cumsum([len(r) for r in self.rows])]).astype(np.int64)
        self.indices = np.concatenate(self.rows) if self.rows else np.zeros(0, np.int64)
        self.n = n

    def __len__(self) -> int:
        return len(self.names)

    def count(self, weight: np.ndarray) -> np.ndarray:
        if not len(self.names):
            return np.zeros(0)
        return np.add.reduceat(weight[self.indices].astype(np.float64), self.indptr[:-1])


def _grow(cover: _Cover, decisions: np.ndarray, active: np.ndarray, *, rule_precision: float, min_support: int,
          max_rules: int | None) -> tuple[list[tuple[int, int, float, int]], list[int]]:
    """Greedy decision-list growth on the `active` texts: each step appends the candidate (either
    class) with the largest gain correct - rule_precision x covered among the texts no earlier rule covers, of
    precision >= rule_precision and support >= min_support. Returns the rules as (candidate, class,
    precision, covered) and the default after each prefix (the majority of what it leaves uncovered)."""
    remaining = active.copy()
    pos_w, neg_w = remaining & (decisions == 1), remaining & (decisions == 0)
    chosen: list[tuple[int, int, float, int]] = []
    defaults = [int(pos_w.sum() > neg_w.sum())]
    used = np.zeros(len(cover), bool)
    while (max_rules is None or len(chosen) < max_rules) and remaining.any() and len(cover):
        pos, neg = cover.count(pos_w), cover.count(neg_w)
        n_cov = pos + neg
        cls = (pos >= neg).astype(np.int8)
        correct = np.maximum(pos, neg)
        prec = correct / np.maximum(n_cov, 1)
        gain = correct - rule_precision * n_cov  # correct beyond the precision a rule must have
        ok = (n_cov >= min_support) & (prec >= rule_precision) & (gain > 0) & ~used
        if not ok.any():
            break
        # Largest gain; then higher precision; then fewer conditions; then the earlier candidate.
        key = np.where(ok, gain * 1e6 + prec * 1e3 - cover.size, -np.inf)
        best = int(np.argmax(key))
        used[best] = True
        chosen.append((best, int(cls[best]), float(prec[best]), int(n_cov[best])))
        remaining[cover.rows[best]] = False
        pos_w, neg_w = remaining & (decisions == 1), remaining & (decisions == 0)
        defaults.append(int(pos_w.sum() > neg_w.sum()) if remaining.any() else defaults[-1])
    return chosen, defaults


def _prefix_fidelity(cover: _Cover, chosen, defaults, decisions: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Fidelity on the `on` texts of every prefix of the grown list (k = 0 .. len(chosen) rules)."""
    idx = np.flatnonzero(on)
    first = np.full(cover.n, len(chosen))
    for r in range(len(chosen) - 1, -1, -1):
        first[cover.rows[chosen[r][0]]] = r
    first, y = first[idx], decisions[idx]
    k = len(chosen)
    cls = np.asarray([c for _, c, _, _ in chosen] + [0], np.int8)
    right = np.zeros(k + 1)
    hit = first < k
    np.add.at(right, first[hit] + 1, (cls[first[hit]] == y[hit]).astype(np.float64))
    right = np.cumsum(right)  # correct among texts a rule of the prefix covers
    # uncovered by prefix k: first >= k
    ones = np.bincount(first, weights=(y == 1).astype(np.float64), minlength=k + 1)
    zeros = np.bincount(first, weights=(y == 0).astype(np.float64), minlength=k + 1)
    ones_left, zeros_left = np.cumsum(ones[::-1])[::-1], np.cumsum(zeros[::-1])[::-1]
    d = np.asarray(defaults[:k + 1])
    return (right + np.where(d == 1, ones_left, zeros_left)) / max(len(idx), 1)


def query_texts(words: Sequence[Sequence[str]], per_text: int, seed: int = 0) -> tuple[list[list[str]], np.ndarray]:
    """Texts to ask the model about (as TREPAN queries its network, Craven & Shavlik 1996): for each
    given text, `per_text` variants with one word replaced by another word that some given text has
    between the same two (normalised) neighbours, so the variants stay close to the data's own
    phrasing. Returns the variants (words) and the index of the text each was made from."""
    rng = np.random.default_rng(seed)
    norm = [[normalise(w) for w in ws] for ws in words]
    keys = [[(n[j - 1] if j else "<s>", n[j + 1] if j + 1 < len(n) else "</s>") for j in range(len(n))] for n in norm]
    fillers: dict[tuple[str, str], dict[str, str]] = {}
    for ws, ns, ks in zip(words, norm, keys):
        for w, x, k in zip(ws, ns, ks):
            fillers.setdefault(k, {}).setdefault(x, w)
    options = {k: list(v.items()) for k, v in fillers.items() if len(v) > 1}
    out, source = [], []
    for t, (ws, ns, ks) in enumerate(zip(words, norm, keys)):
        slots = [j for j, k in enumerate(ks) if k in options]
        if not slots:
            continue
        for _ in range(per_text):
            j = slots[int(rng.integers(len(slots)))]
            alternatives = [w for x, w in options[ks[j]] if x != ns[j]]
            new = list(ws)
            new[j] = alternatives[int(rng.integers(len(alternatives)))]
            out.append(new)
            source.append(t)
    return out, np.asarray(source, np.int64)


def mine_decision_list(local: Sequence[LocalRule], norm_texts: Sequence[tuple[str, ...]], decisions: np.ndarray, *,
                       rule_precision: float | Sequence[float] = DEFAULT_RULE_PRECISIONS,
                       min_support: int = DEFAULT_MIN_SUPPORT,
                       max_rules: int | None = None, extra: Sequence[tuple[str, ...]] = (),
                       pair_words: Sequence[str] = (), validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
                       seed: int = 0, info: dict | None = None,
                       queried: tuple[Sequence[tuple[str, ...]], np.ndarray, np.ndarray] | None = None) -> DecisionList:
    """The decision list of the candidates (`candidate_rules`) that best reproduces `decisions`
    (module doc): grown greedily by fidelity gain on a (1 - validation_fraction) part of the texts,
    its length the prefix with the best fidelity on the validation part, then re-grown on all texts
    to that length (`max_rules`, if given, caps it). `info`, if a dict, receives the validation curve."""
    decisions = np.asarray(decisions, np.int8)
    n_given = len(norm_texts)
    if queried is not None and len(queried[0]):
        norm_texts = list(norm_texts) + list(queried[0])
        decisions = np.concatenate([decisions, np.asarray(queried[1], np.int8)])
    n = len(norm_texts)
    names = candidate_rules(local, extra, pair_words)
    phrases = sorted({p for c in names for p in c})
    rows_of = dict(zip(phrases, phrase_index(norm_texts, phrases)))
    rows = []
    for c in names:
        r = rows_of[c[0]]
        for p in c[1:]:
            r = np.intersect1d(r, rows_of[p], assume_unique=True)
        rows.append(r if len(r) >= min_support else r[:0])
    cover = _Cover(names, rows, n)
    everyone = np.ones(n, bool)
    grid = [float(rule_precision)] if np.isscalar(rule_precision) else [float(x) for x in rule_precision]
    length, alpha = max_rules, grid[0]
    if validation_fraction and n_given >= 10:
        order = np.random.default_rng(seed).permutation(n_given)  # validation: given texts only
        held = np.zeros(n, bool)
        held[order[:max(1, int(round(n_given * validation_fraction)))]] = True
        fit = ~held
        if n > n_given:  # a queried text made from a validation text is left out of the growth too
            fit[n_given:] = ~held[np.asarray(queried[2], np.int64)]
        best = (-1.0, 0, grid[0], [])
        for a in grid:
            grown, defaults = _grow(cover, decisions, fit, rule_precision=a, min_support=min_support,
                                    max_rules=max_rules)
            curve = _prefix_fidelity(cover, grown, defaults, decisions, held)
            k = int(np.argmax(curve))  # the shortest prefix with the best validation fidelity
            if curve[k] > best[0]:
                best = (float(curve[k]), k, a, curve)
        _, length, alpha, curve = best
        if info is not None:
            info.update(validation_curve=[float(x) for x in curve], validation_fidelity=float(curve[length]),
                        chosen_length=length, rule_precision=alpha, n_validation=int(held.sum()),
                        n_candidates=len(cover), n_queried=n - n_given)
    chosen, defaults = _grow(cover, decisions, everyone, rule_precision=alpha, min_support=min_support,
                             max_rules=length)
    default = defaults[-1]  # the majority of what the whole list leaves uncovered
    rules = [GlobalRule(phrases=cover.names[b], decision=c, mining_precision=p, mining_coverage=k / n)
             for b, c, p, k in chosen]
    return DecisionList(rules, default)


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
