"""ROC AUC on the host, exactly (no binning): the Mann-Whitney U statistic with tied scores
counted half, which is what scikit-learn's `roc_auc_score` computes (tests compare the two)."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted 1/2; NaN when
    either class is absent (AUC is undefined there, and 0.5 would pass for a real figure)."""
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks of ties
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
