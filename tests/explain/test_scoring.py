"""The length-bucketed scorer is `Classifier.score` (what fairness_eval --scores-out writes)."""
import numpy as np

from holo_jax.explain.scoring import BucketedScorer

from tests.explain.conftest import keyword_texts


def test_bucketed_scores_equal_the_classifier_s_in_order(keyword_classifier):
    texts = [r["text"] for r in keyword_texts(40, seed=5)]
    texts += [" ".join(t.split()[::2]) for t in texts] + ["", "zorp " * 30]  # short, empty, cut at max_len
    got = BucketedScorer(keyword_classifier, batch_size=16)(texts)
    np.testing.assert_allclose(got, keyword_classifier.score(texts), atol=1e-5)
