"""Faithfulness of word relevance: ERASER's comprehensiveness, sufficiency and AOPC (DeYoung et
al. 2020) and deletion / insertion curves (Petsiuk et al. 2018), by deleting words and re-scoring.

Definitions (p = the model's probability of the class it decided on the full text, x = the text as
given, r_k = its ceil(k% * n_words) most relevant words, ties broken by word position; deleting
and keeping words is holo_jax.explain.words' rule, so every text below can be rebuilt from
`--explanations-out` and re-scored with `experiments.fairness_eval --scores-out`):

- comprehensiveness_k = p(x) - p(x without r_k)   (higher: the words mattered)
- sufficiency_k       = p(x) - p(only r_k)        (lower: the words suffice)
- AOPC = the mean over k in `PERCENTS` of each, per example, then over examples
- deletion curve: p(x without its top ceil(f * n) words) at f = 0, 0.1, ..., 1; insertion curve:
  p(only those words); AUC = trapezoid area over f in [0, 1] (deletion: lower is more faithful,
  insertion: higher). f = 0 of the deletion curve is the re-joined full text, f = 0 of insertion the
  empty text.

Texts without words are left out (there is nothing to rank) and counted. All perturbed texts of
all methods are scored in one batched pass (identical texts scored once).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from holo_jax.explain.rules import Scorer, _support
from holo_jax.explain.words import delete_words, keep_words

PERCENTS = (1, 5, 10, 20, 50)
FRACTIONS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2).tolist())


def top_count(n_words: int, percent: float) -> int:
    """How many words "the top k%" of n words is: ceil(k/100 * n), at least 1 for a non-empty text."""
    return min(n_words, max(1, math.ceil(percent / 100.0 * n_words - 1e-9)))


def ranking(relevance: np.ndarray) -> np.ndarray:
    """Word positions from most to least relevant (stable: ties keep text order)."""
    return np.argsort(-np.asarray(relevance, np.float64), kind="stable")


def faithfulness(words: Sequence[Sequence[str]], full_probability: np.ndarray, decisions: np.ndarray,
                 relevance: Mapping[str, Sequence[np.ndarray]], score: Scorer, *,
                 percents: Sequence[float] = PERCENTS, fractions: Sequence[float] = FRACTIONS) -> dict:
    """Per method: comprehensiveness/sufficiency per k and their AOPC (with standard errors),
    deletion and insertion curves and AUCs. `full_probability`: P(label 1) of each text as given."""
    index: dict[str, int] = {}

    def ref(text: str) -> int:
        return index.setdefault(text, len(index))

    used = [i for i, w in enumerate(words) if len(w)]
    plan: dict[str, dict[str, np.ndarray]] = {}
    for method, rel in relevance.items():
        comp = np.zeros((len(used), len(percents)), np.int64)
        suff = np.zeros_like(comp)
        dele = np.zeros((len(used), len(fractions)), np.int64)
        ins = np.zeros_like(dele)
        for row, i in enumerate(used):
            w, order = words[i], ranking(rel[i])
            for j, k in enumerate(percents):
                top = order[:top_count(len(w), k)]
                comp[row, j], suff[row, j] = ref(delete_words(w, top)), ref(keep_words(w, top))
            for j, f in enumerate(fractions):
                top = order[:math.ceil(f * len(w) - 1e-9)]
                dele[row, j], ins[row, j] = ref(delete_words(w, top)), ref(keep_words(w, top))
        plan[method] = {"comp": comp, "suff": suff, "del": dele, "ins": ins}
    texts = list(index)
    p_all = np.asarray(score(texts), np.float64) if texts else np.zeros(0)
    d = np.asarray(decisions)[used]
    base = _support(np.asarray(full_probability, np.float64)[used], d)

    def support(ids: np.ndarray) -> np.ndarray:
        return _support(p_all[ids], d[:, None])

    out: dict[str, dict] = {}
    for method, ids in plan.items():
        comp = base[:, None] - support(ids["comp"])
        suff = base[:, None] - support(ids["suff"])
        dele, ins = support(ids["del"]), support(ids["ins"])
        comp_aopc, suff_aopc = comp.mean(1), suff.mean(1)
        sem = lambda x: float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")  # noqa: E731
        out[method] = {
            "comprehensiveness": {str(k): float(v) for k, v in zip(percents, comp.mean(0))},
            "sufficiency": {str(k): float(v) for k, v in zip(percents, suff.mean(0))},
            "comprehensiveness_aopc": float(comp_aopc.mean()), "comprehensiveness_aopc_sem": sem(comp_aopc),
            "sufficiency_aopc": float(suff_aopc.mean()), "sufficiency_aopc_sem": sem(suff_aopc),
            "deletion_auc": float(np.trapezoid(dele, fractions, axis=1).mean()),
            "insertion_auc": float(np.trapezoid(ins, fractions, axis=1).mean()),
            "deletion_curve": [float(v) for v in dele.mean(0)],
            "insertion_curve": [float(v) for v in ins.mean(0)],
        }
    return {"n_examples": len(used), "n_without_words": len(words) - len(used), "percents": list(percents),
            "fractions": list(fractions), "texts_scored": len(texts), "methods": out}


def comparison_table(report: Mapping) -> str:
    """A text table of the headline figures, one row per method."""
    head = f"{'method':<24} {'compr.AOPC':>10} {'suff.AOPC':>10} {'deletion':>9} {'insertion':>9}"
    rows = [head, "-" * len(head)]
    for method, m in report["methods"].items():
        rows.append(f"{method:<24} {m['comprehensiveness_aopc']:>10.4f} {m['sufficiency_aopc']:>10.4f} "
                    f"{m['deletion_auc']:>9.4f} {m['insertion_auc']:>9.4f}")
    return "\n".join(rows)


def plot_curves(report: Mapping, path: str | Path, *, title: str = "") -> Path:
    """Deletion and insertion curves of every method, side by side, as a PNG (written aside, renamed)."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for method, m in report["methods"].items():
        style = dict(lw=2.2) if method == "symbolic" else dict(lw=1.2, ls="--" if method == "random" else "-")
        left.plot(report["fractions"], m["deletion_curve"], label=f"{method} ({m['deletion_auc']:.3f})", **style)
        right.plot(report["fractions"], m["insertion_curve"], label=f"{method} ({m['insertion_auc']:.3f})", **style)
    for ax, name in ((left, "deletion (lower is more faithful)"), (right, "insertion (higher is more faithful)")):
        ax.set_xlabel("fraction of words deleted" if ax is left else "fraction of words kept")
        ax.set_ylabel("P(decided class)")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"{report['n_examples']} examples")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
