"""The rule engine on toy models whose rule is known: local rules, their measured precision, the
mined decision list and its fidelity, coverage and simulatability, and the word-deletion rule."""
import numpy as np
import pytest

from holo_jax.explain import (
    check_rules, construct_rules, contains, delete_words, evaluate_decision_list, keep_words, mine_decision_list,
    normalise, normalised_words, symbolic_relevance,
)
from holo_jax.explain.rules import perturbations, query_texts


def toy_scorer(rule):
    """A model that scores P(toxic) = 0.9 where rule(words) holds, else 0.1, counting its calls."""
    calls = []

    def score(texts):
        calls.append(len(texts))
        return np.asarray([0.9 if rule(t.split()) else 0.1 for t in texts])

    score.calls = calls
    return score


def test_deletion_rule_is_remove_and_rejoin_with_single_spaces():
    words = "  Hello,\tbig   world ! ".split()
    assert words == ["Hello,", "big", "world", "!"]
    assert delete_words(words, [1]) == "Hello, world !"
    assert keep_words(words, [2, 0]) == "Hello, world"
    assert delete_words(words, []) == "Hello, big world !"
    assert normalise("Idiot,") == "idiot" and normalise("!!") == ""


def test_local_rule_of_a_one_word_model_is_that_word_with_precision_one():
    score = toy_scorer(lambda w: "bad" in w)
    words = [s.split() for s in ("you are so bad today", "a nice day", "bad")]
    relevance = [np.array([0.1, 0.2, 0.3, 0.9, 0.0]), np.array([0.5, 0.2, 0.1]), np.array([1.0])]
    decisions = np.array([1, 0, 1], np.int8)
    rules, search = construct_rules(words, relevance, decisions, score, candidates=3, max_words=3)
    assert rules[0].text() == 'IF contains("bad") THEN toxic' and rules[0].holds
    assert rules[1].text() == 'IF contains("a") THEN not_toxic'  # any word keeps "not toxic"
    # One round sufficed for all three, in one batched call of every candidate (3 + 3 + 1 texts).
    assert score.calls == [7]
    checked = check_rules(search, score, samples=200, precision_target=0.95, max_words=3)
    assert [r.precision for r in checked] == [1.0, 1.0, 1.0] and all(r.meets_target for r in checked)


def test_greedy_construction_finds_a_two_word_conjunction_as_a_phrase():
    # Toxic only when "very" is directly followed by "bad"; relevance ranks "bad" first.
    score = toy_scorer(lambda w: any(a == "very" and b == "bad" for a, b in zip(w, w[1:])))
    words = ["it", "is", "very", "bad", "indeed"]
    rules, _ = construct_rules([words], [np.array([0.1, 0.0, 0.5, 0.9, 0.2])], np.array([1], np.int8), score,
                               candidates=4, max_words=3)
    assert rules[0].positions == [3, 2] and rules[0].holds
    assert rules[0].text() == 'IF contains("very bad") THEN toxic'
    rel = symbolic_relevance(rules[0], np.array([0.1, 0.0, 0.5, 0.9, 0.2]))
    assert list(np.argsort(-rel)[:2]) == [3, 2] and rel[3] > rel[2] > 1.0 > rel[4] > rel[0] > rel[1]


def test_measured_precision_matches_the_exact_probability_and_a_miss_is_reported():
    # Toxic when "bad" and at least two of the other three words are present. Keeping "bad" and each
    # other word with probability 1/2: precision = P(Binomial(3, 1/2) >= 2) = 1/2 exactly.
    score = toy_scorer(lambda w: "bad" in w and len(w) >= 3)
    words = [["bad", "x", "y", "z"]]
    _, search = construct_rules(words, [np.array([1.0, 0, 0, 0])], np.array([1], np.int8), score, candidates=1,
                                max_words=1)
    samples = 4000
    rule = check_rules(search, score, samples=samples, precision_target=0.9, max_words=1)[0]
    assert rule.text() == 'IF contains("bad") THEN toxic' and rule.holds is False
    assert abs(rule.precision - 0.5) < 4 * np.sqrt(0.25 / samples)
    assert rule.meets_target is False and rule.samples == samples
    # The perturbation sampler keeps the rule's words and drops each other word half the time.
    texts = perturbations(["bad", "x", "y", "z"], [0], 2000, np.random.default_rng(0))
    assert all(t.split()[0] == "bad" for t in texts)
    assert abs(np.mean([len(t.split()) - 1 for t in texts]) - 1.5) < 0.1


def test_a_rule_below_target_is_extended_until_it_meets_it():
    score = toy_scorer(lambda w: "bad" in w and "very" in w)
    words = [["so", "very", "bad", "now"]]
    _, search = construct_rules(words, [np.array([0.0, 0.5, 1.0, 0.2])], np.array([1], np.int8),
                                toy_scorer(lambda w: "bad" in w), candidates=3, max_words=1)
    # The rule {bad} from a scorer that ignores "very": checked against the real model it holds half the time.
    rule = check_rules(search, score, samples=400, precision_target=0.9, max_words=2)[0]
    assert rule.positions == [2, 1] and rule.precision == 1.0 and rule.meets_target


@pytest.fixture
def toy_dataset():
    rng = np.random.default_rng(0)
    vocab = ["the", "a", "cat", "dog", "sat", "ran", "big", "red"]
    texts = [[vocab[i] for i in rng.integers(len(vocab), size=5)] + (["Bad!"] if k % 2 else []) for k in range(200)]
    return texts


def test_decision_list_recovers_the_known_rule_and_fidelity_counts_agreements(toy_dataset):
    score = toy_scorer(lambda w: "Bad!" in w)
    decisions = np.asarray(score([" ".join(w) for w in toy_dataset]) >= 0.5, np.int8)
    relevance = [np.asarray([1.0 if w == "Bad!" else 0.1 * i for i, w in enumerate(ws)]) for ws in toy_dataset]
    rules, _ = construct_rules(toy_dataset, relevance, decisions, score)
    norm = [normalised_words(w) for w in toy_dataset]
    dlist = mine_decision_list(rules[:100], norm[:100], decisions[:100])
    assert dlist.rules[0].text() == 'IF contains("bad") THEN toxic' and dlist.default == 0
    report = evaluate_decision_list(dlist, norm[100:], decisions[100:], decisions[:100])
    assert report["fidelity"] == 1.0
    # Flip 7 of the held-out decisions: fidelity must fall by exactly 7/100.
    flipped = decisions[100:].copy()
    flipped[:7] ^= 1
    report = evaluate_decision_list(dlist, norm[100:], flipped, decisions[:100])
    assert report["fidelity"] == pytest.approx(0.93)
    # Coverage: the share where a non-default rule fires (here every toxic text, and any
    # not-toxic rule's texts); each rule's precision is over the texts it is first to match.
    first = dlist.first_match(norm[100:])
    assert report["coverage"] == pytest.approx(np.mean(first >= 0))
    top = report["rules"][0]
    hit = first == 0
    assert top["coverage"] == pytest.approx(hit.mean())
    assert top["precision"] == pytest.approx(np.mean(flipped[hit] == 1))
    # Simulatability: the rules' reader against one who always predicts the majority decision.
    sim = report["simulatability"]
    majority = int(decisions[:100].mean() >= 0.5)  # the mining split's (ties: toxic)
    assert sim["without_rules"] == pytest.approx(np.mean(flipped == majority))
    assert sim["gain"] == pytest.approx(sim["with_rules"] - sim["without_rules"])


def test_contains_matches_normalised_contiguous_phrases():
    norm = normalised_words("You are a VERY, bad - person".split())
    assert norm == ("you", "are", "a", "very", "bad", "person")
    assert contains(norm, "very bad") and contains(norm, "bad person") and not contains(norm, "a bad")


FILLER = ["the", "a", "cat", "dog", "sat", "ran", "big", "red", "on", "mat", "old", "new"]


def _three_rule_data(n, seed):
    """Texts of filler words, each of "kind", "bad", "awful", "you" present independently; the model
    is the decision list 1. IF kind THEN not_toxic 2. IF bad THEN toxic 3. IF awful AND you THEN toxic
    4. ELSE not_toxic."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        words = [FILLER[i] for i in rng.integers(len(FILLER), size=int(rng.integers(3, 7)))]
        for w, p in (("kind", 0.25), ("bad", 0.35), ("awful", 0.4), ("you", 0.5)):
            if rng.random() < p:
                words.insert(int(rng.integers(len(words) + 1)), w)
        texts.append(words)
    return texts


def _three_rule_model(words):
    w = set(words)
    return "kind" not in w and ("bad" in w or {"awful", "you"} <= w)


def test_decision_list_learner_recovers_a_three_rule_list_of_both_classes():
    score = toy_scorer(_three_rule_model)
    mining, heldout = _three_rule_data(400, seed=1), _three_rule_data(400, seed=2)
    decisions = np.asarray(score([" ".join(w) for w in mining]) >= 0.5, np.int8)
    relevance = [np.asarray([1.0 if w in ("kind", "bad", "awful", "you") else 0.0 for w in ws]) for ws in mining]
    local, _ = construct_rules(mining, relevance, decisions, score)
    info = {}
    dlist = mine_decision_list(local, [normalised_words(w) for w in mining], decisions, info=info)
    assert [r.text() for r in dlist.rules] == ['IF contains("kind") THEN not_toxic', 'IF contains("bad") THEN toxic',
                                               'IF contains("awful") AND contains("you") THEN toxic']
    assert dlist.default == 0 and info["chosen_length"] == 3 and info["validation_fidelity"] == 1.0
    held_decisions = np.asarray(score([" ".join(w) for w in heldout]) >= 0.5, np.int8)
    report = evaluate_decision_list(dlist, [normalised_words(w) for w in heldout], held_decisions, decisions)
    assert report["fidelity"] == 1.0 and report["coverage"] < 1.0
    # The old fixed-precision covering with a 0.9 floor could not take "bad" (precision 0.75 before
    # "kind" is out of the way) first; the learner takes "kind" first because it gains more.
    assert dlist.rules[0].mining_precision == 1.0


def test_validation_stopping_keeps_a_noisy_list_short():
    # One real rule ("bad" -> toxic) and otherwise random decisions (30% toxic): every further rule
    # fits noise. Grown without validation the list is long; with it, it stops near the real rule.
    rng = np.random.default_rng(3)
    vocab = [f"w{k}" for k in range(40)]
    texts = [[vocab[i] for i in rng.integers(len(vocab), size=5)] + (["bad"] if rng.random() < 0.3 else [])
             for _ in range(1200)]
    decisions = np.asarray([1 if "bad" in w else int(rng.random() < 0.3) for w in texts], np.int8)
    norm = [normalised_words(w) for w in texts]
    mining, heldout = slice(0, 600), slice(600, None)
    kw = dict(extra=[(w,) for w in vocab + ["bad"]], pair_words=vocab, min_support=3, rule_precision=0.7)
    long = mine_decision_list([], norm[mining], decisions[mining], validation_fraction=0.0, **kw)
    short = mine_decision_list([], norm[mining], decisions[mining], **kw)
    assert len(long.rules) >= 20
    assert 1 <= len(short.rules) <= 5 and short.rules[0].text() == 'IF contains("bad") THEN toxic'
    def fid(dlist):
        return evaluate_decision_list(dlist, norm[heldout], decisions[heldout], decisions[mining])["fidelity"]

    assert fid(short) > fid(long)


def test_queried_variants_swap_one_word_for_one_seen_in_the_same_context():
    words = [["you", "are", "kind"], ["you", "are", "rude"], ["we", "are", "kind"], ["solo"]]
    variants, source = query_texts(words, 5, seed=0)
    assert len(variants) == 15 and list(source) == [0] * 5 + [1] * 5 + [2] * 5  # "solo" has no slot
    for v, s in zip(variants, source):
        diff = [j for j, (a, b) in enumerate(zip(v, words[s])) if a != b]
        assert len(v) == len(words[s]) and len(diff) == 1
        assert (diff[0], v[diff[0]]) in {(2, "rude"), (2, "kind"), (0, "we"), (0, "you")}
    assert variants == query_texts(words, 5, seed=0)[0]


def test_queried_decisions_extend_the_mining_data():
    # "awful" is in only 2 of the given texts (below min_support 3); 4 queried variants, decided by
    # the model, give the rule the support it needs.
    given = [["the", "cat", "sat"], ["a", "dog", "ran"]] * 10 + [["the", "awful", "sat"], ["a", "awful", "ran"]]
    decisions = np.asarray([0] * 20 + [1, 1], np.int8)
    kw = dict(extra=[("awful",), ("cat",), ("dog",)], min_support=3, validation_fraction=0.0)
    without = mine_decision_list([], [normalised_words(w) for w in given], decisions, **kw)
    queried = [("the", "awful", "ran"), ("a", "awful", "sat"), ("awful", "cat"), ("awful",)]
    with_q = mine_decision_list([], [normalised_words(w) for w in given], decisions,
                                queried=(queried, np.ones(4, np.int8), np.asarray([20, 21, 20, 21])), **kw)
    awful = 'IF contains("awful") THEN toxic'
    assert awful not in [r.text() for r in without.rules] and awful in [r.text() for r in with_q.rules]
