"""ROC AUC: holo_jax's exact host implementation agrees with scikit-learn's `roc_auc_score`, and so
does the classification task's `eval_auc` (binary, and macro one-vs-rest for more classes)."""
import math

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

from holo_jax.train.roc_auc import roc_auc
from holo_jax.train.tasks import SequenceClassification

TOL = 1e-12


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [10, 257, 2000])
def test_matches_sklearn_on_random_scores(seed, n):
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < rng.uniform(0.1, 0.9)
    positive[:2] = [True, False]  # both classes present
    scores = rng.normal(size=n) + positive * rng.uniform(0.0, 2.0)
    assert roc_auc(positive, scores) == pytest.approx(roc_auc_score(positive, scores), abs=TOL)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [1, 2, 3, 10])
def test_matches_sklearn_with_many_tied_scores(seed, levels):
    rng = np.random.default_rng(100 + seed)
    n = 500
    positive = rng.random(n) < 0.4
    positive[:2] = [True, False]
    # Only `levels` distinct scores: most pairs tie (with levels=1 every pair does: AUC 0.5).
    scores = rng.integers(0, levels, size=n) / max(levels, 1) + 0.1 * positive * rng.integers(0, 2, size=n)
    scores = np.round(scores, 1)
    assert len(np.unique(scores)) < n / 10
    assert roc_auc(positive, scores) == pytest.approx(roc_auc_score(positive, scores), abs=TOL)
    # Ties across the two classes are counted half, not broken by order.
    assert roc_auc(positive[::-1], scores[::-1]) == pytest.approx(roc_auc(positive, scores), abs=TOL)


@pytest.mark.parametrize("positive, scores, expected", [
    ([1, 0], [0.9, 0.1], 1.0),
    ([1, 0], [0.1, 0.9], 0.0),
    ([1, 0], [0.5, 0.5], 0.5),
    ([0, 1], [0.2, 0.7], 1.0),
])
def test_matches_sklearn_on_one_positive_and_one_negative(positive, scores, expected):
    got = roc_auc(np.array(positive, bool), np.array(scores))
    assert got == pytest.approx(roc_auc_score(positive, scores), abs=TOL)
    assert got == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("positive", [[1, 1, 1], [0, 0, 0], [1], [0]])
def test_absent_class_is_nan_as_in_sklearn(positive):
    scores = np.linspace(0.1, 0.9, len(positive))
    assert math.isnan(roc_auc(np.array(positive, bool), scores))
    # scikit-learn < 1.6 raised ValueError here; since 1.6 (scikit-learn#27412, #30103) it warns and returns NaN.
    with pytest.warns(UndefinedMetricWarning, match="Only one class is present"):
        assert math.isnan(roc_auc_score(positive, scores))


def test_empty_input_is_nan():
    assert math.isnan(roc_auc(np.zeros(0, bool), np.zeros(0)))


def _rows(rng, n, num_classes, *, ties=False):
    labels = rng.integers(0, num_classes, size=n).astype(np.int32)
    labels[:num_classes] = np.arange(num_classes)  # every class present
    logits = rng.normal(size=(n, num_classes)) + 1.5 * np.eye(num_classes)[labels] * rng.random((n, 1))
    if ties:
        logits = np.round(logits)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (probs / probs.sum(-1, keepdims=True)).astype(np.float32)  # what eval_batch's softmax yields
    return labels, probs


def _sums(rng):
    return {"loss": (float(rng.uniform(10, 100)), 64.0), "accuracy": (float(rng.integers(0, 64)), 64.0)}


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_binary_task_eval_auc_is_sklearn_auc_of_the_positive_class(seed, ties):
    rng = np.random.default_rng(200 + seed)
    labels, probs = _rows(rng, 300, 2, ties=ties)
    sums = _sums(rng)
    metrics = SequenceClassification(num_classes=2).eval_metrics(sums, {"label": labels, "probs": probs})
    assert metrics["eval_auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]), abs=TOL)
    assert metrics["eval_loss"] == pytest.approx(sums["loss"][0] / sums["loss"][1])
    assert metrics["eval_accuracy"] == pytest.approx(sums["accuracy"][0] / sums["accuracy"][1])


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_three_class_task_eval_auc_is_sklearn_macro_one_vs_rest(seed, ties):
    rng = np.random.default_rng(300 + seed)
    labels, probs = _rows(rng, 300, 3, ties=ties)
    metrics = SequenceClassification(num_classes=3).eval_metrics(_sums(rng), {"label": labels, "probs": probs})
    expected = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert metrics["eval_auc"] == pytest.approx(expected, abs=TOL)
