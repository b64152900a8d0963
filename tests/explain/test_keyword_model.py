"""On a classifier trained so that its decision is exactly the presence of one word ("zorp"): the
faithful methods rank that word first, random does not, the global rules recover it, and the
faithfulness figures tell the faithful methods from the others."""
import numpy as np
import pytest

from holo_jax.explain import ALL_METHODS, Attributor, RuleSettings, explain_texts, faithfulness, global_rules

from tests.explain.conftest import KEYWORD, keyword_texts

# Gradient-weighted rollout, integrated gradients and the rule engine read the decision; raw
# attention, plain rollout and Grad-CAM on a last-token-pooled causal model do not (their
# top word is the keyword in at most a third of the texts here; see the comprehensiveness check).
FAITHFUL = ("grad_attention_rollout", "integrated_gradients", "symbolic")


@pytest.fixture(scope="module")
def explained(keyword_classifier):
    rows = keyword_texts(160, seed=11)
    expl = explain_texts(keyword_classifier, Attributor(keyword_classifier, batch_size=16, ig_steps=8),
                         [r["text"] for r in rows], RuleSettings(samples=32), score_batch=64)
    return rows, expl


def _first_is_keyword(expl, method, indices):
    return np.mean([expl.words[i][int(np.argmax(expl.relevance[method][i]))] == KEYWORD for i in indices])


@pytest.mark.slow
def test_the_model_decides_by_the_keyword(explained):
    rows, expl = explained
    assert np.mean(expl.decisions == np.asarray([r["label"] for r in rows])) >= 0.97


def test_faithful_methods_rank_the_keyword_first_and_random_does_not(explained):
    rows, expl = explained
    positive = [i for i, r in enumerate(rows) if r["label"] and expl.decisions[i] == 1]
    assert len(positive) > 50
    for method in FAITHFUL:
        assert _first_is_keyword(expl, method, positive) >= 0.95, method
    # Random ranks it first about 1/(words per text) of the time (5 to 8 words here).
    assert _first_is_keyword(expl, "random", positive) < 0.35


def test_local_rules_name_the_keyword_with_high_precision(explained):
    rows, expl = explained
    positive = [i for i, r in enumerate(rows) if r["label"] and expl.decisions[i] == 1]
    rules = [expl.rules[i] for i in positive]
    assert np.mean([r.text() == f'IF contains("{KEYWORD}") THEN toxic' for r in rules]) >= 0.95
    assert np.mean([r.precision for r in rules]) >= 0.95


def test_global_rules_recover_the_keyword_with_high_fidelity(explained):
    _, expl = explained
    report, dlist = global_rules(expl, holdout_fraction=0.5, seed=0)
    toxic = [r for r in dlist.rules if r.decision == 1]
    assert toxic and toxic[0].phrases == (KEYWORD,)
    assert report["fidelity"] >= 0.95 and report["simulatability"]["gain"] > 0.3


def test_comprehensiveness_separates_faithful_methods_from_random(explained, keyword_classifier):
    _, expl = explained
    report = faithfulness(expl.words, expl.probability, expl.decisions, expl.relevance, keyword_classifier.score)
    m = report["methods"]
    assert set(m) == set(ALL_METHODS)
    for method in FAITHFUL:
        assert m[method]["comprehensiveness_aopc"] > m["random"]["comprehensiveness_aopc"] + 0.1, method
        assert m[method]["sufficiency_aopc"] < m["random"]["sufficiency_aopc"], method



def test_global_rules_with_queried_variants_keep_the_keyword_rule(explained, keyword_classifier):
    _, expl = explained
    report, dlist = global_rules(expl, holdout_fraction=0.5, seed=0, score=keyword_classifier.score)
    mining = report["mining"]
    assert mining["n_queried"] > 0 and mining["queries_per_text"] == 8
    assert mining["rule_precision"] in (0.7, 0.75, 0.8, 0.85, 0.9) and report["n_rules"] == len(dlist.rules)
    toxic = [r for r in dlist.rules if r.decision == 1]
    assert toxic and toxic[0].phrases == (KEYWORD,)
    assert report["fidelity"] >= 0.95
