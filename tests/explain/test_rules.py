"""The rule engine on toy models whose rule is known: local rules, their measured precision, the
mined decision list and its fidelity, coverage and simulatability, and the word-deletion rule."""
import numpy as np
import pytest

from holo_jax.explain import (
    check_rules, construct_rules, contains, delete_words, evaluate_decision_list, keep_words, mine_decision_list,
    normalise, normalised_words, symbolic_relevance,
)
from holo_jax.explain.rules import perturbations


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
