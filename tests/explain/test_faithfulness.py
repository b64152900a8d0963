"""ERASER comprehensiveness / sufficiency / AOPC and deletion / insertion AUC against a direct
re-implementation of their definitions on a toy model."""
import math

import numpy as np
import pytest

from holo_jax.explain import faithfulness, plot_curves, top_count
from holo_jax.explain.words import delete_words, keep_words


def share_of_bad(texts):
    """P(toxic) = 0.1 + 0.8 * (share of the words that are "bad"); 0.1 for the empty text."""
    out = []
    for t in texts:
        w = t.split()
        out.append(0.1 + 0.8 * (sum(x == "bad" for x in w) / len(w)) if w else 0.1)
    return np.asarray(out)


def test_top_count_is_ceil_of_the_share_and_at_least_one():
    assert [top_count(10, k) for k in (1, 5, 10, 20, 50)] == [1, 1, 1, 2, 5]
    assert [top_count(3, k) for k in (1, 50)] == [1, 2] and top_count(200, 1) == 2


def _reference(words, p_full, decision, rel, percents, fractions):
    """The definitions written out for one example, one text at a time."""
    support = lambda t: (lambda p: p if decision == 1 else 1 - p)(share_of_bad([t])[0])  # noqa: E731
    base = p_full if decision == 1 else 1 - p_full
    order = sorted(range(len(words)), key=lambda i: (-rel[i], i))
    comp, suff = [], []
    for k in percents:
        top = order[:max(1, math.ceil(k / 100 * len(words)))]
        comp.append(base - support(delete_words(words, top)))
        suff.append(base - support(keep_words(words, top)))
    dele = [support(delete_words(words, order[:math.ceil(f * len(words) - 1e-9)])) for f in fractions]
    ins = [support(keep_words(words, order[:math.ceil(f * len(words) - 1e-9)])) for f in fractions]
    trap = lambda y: sum((y[i] + y[i + 1]) / 2 * (fractions[i + 1] - fractions[i]) for i in range(len(y) - 1))  # noqa: E731
    return comp, suff, trap(dele), trap(ins)


def test_figures_equal_the_definitions_on_a_toy_model():
    rng = np.random.default_rng(3)
    vocab = ["bad", "good", "the", "a", "day"]
    words = [[vocab[i] for i in rng.integers(len(vocab), size=int(rng.integers(1, 12)))] for _ in range(30)]
    words.append([])  # no words: left out and counted
    texts = [" ".join(w) for w in words]
    p = share_of_bad(texts)
    decisions = (p >= 0.5).astype(np.int8)
    # The oracle ranks first the words that push towards the decision: "bad" for toxic, the others otherwise.
    relevance = {"oracle": [np.asarray([float((x == "bad") == bool(d)) for x in w]) for w, d in zip(words, decisions)],
                 "noise": [rng.random(len(w)) for w in words]}
    report = faithfulness(words, p, decisions, relevance, share_of_bad)
    assert report["n_examples"] == 30 and report["n_without_words"] == 1
    percents, fractions = report["percents"], report["fractions"]
    for method, rel in relevance.items():
        ref = [_reference(words[i], p[i], decisions[i], rel[i], percents, fractions) for i in range(30)]
        got = report["methods"][method]
        np.testing.assert_allclose([got["comprehensiveness"][str(k)] for k in percents],
                                   np.mean([r[0] for r in ref], 0), atol=1e-9)
        np.testing.assert_allclose([got["sufficiency"][str(k)] for k in percents],
                                   np.mean([r[1] for r in ref], 0), atol=1e-9)
        assert got["comprehensiveness_aopc"] == pytest.approx(np.mean([np.mean(r[0]) for r in ref]))
        assert got["sufficiency_aopc"] == pytest.approx(np.mean([np.mean(r[1]) for r in ref]))
        assert got["deletion_auc"] == pytest.approx(np.mean([r[2] for r in ref]))
        assert got["insertion_auc"] == pytest.approx(np.mean([r[3] for r in ref]))
    # The oracle (the words the toy model counts) is more comprehensive and more sufficient than noise.
    o, n = report["methods"]["oracle"], report["methods"]["noise"]
    assert o["comprehensiveness_aopc"] > n["comprehensiveness_aopc"] and o["sufficiency_aopc"] < n["sufficiency_aopc"]
    assert o["deletion_auc"] < n["deletion_auc"]


def test_deletion_curves_png_is_written(tmp_path):
    words = [["bad", "day"], ["good", "bad", "bad"]]
    p = share_of_bad([" ".join(w) for w in words])
    report = faithfulness(words, p, (p >= 0.5).astype(np.int8), {"m": [np.array([1.0, 0]), np.array([0, 1.0, 1.0])]},
                          share_of_bad)
    path = plot_curves(report, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.tmp*"))
