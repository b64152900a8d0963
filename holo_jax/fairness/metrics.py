"""Unintended-bias metrics of a binary toxicity classifier, on the host (numpy).

Definitions follow Borkan et al. 2019, "Nuanced Metrics for Measuring Unintended Bias with Real Data
for Text Classification" (arXiv:1903.04561), as the Jigsaw Unintended Bias in Toxicity Classification
competition scored them (Kaggle, 2019, evaluation page and benchmark kernel). For an identity, the
*subgroup* is the examples that mention it and the *background* is every other example:

- subgroup AUC: the AUC on the subgroup alone. Low: the model separates toxic from non-toxic
  comments about this identity poorly.
- BPSN AUC (background positive, subgroup negative): toxic background examples against non-toxic
  subgroup examples. Low: non-toxic mentions of the identity score higher than toxic comments that
  do not mention it, i.e. the identity itself pushes scores up (false positives).
- BNSP AUC (background negative, subgroup positive): toxic subgroup examples against non-toxic
  background examples. Low: toxic comments about the identity score lower than non-toxic comments
  elsewhere (false negatives).
- the final Jigsaw score (the competition's, built on the paper's metrics): 0.25 * overall AUC +
  0.75 * the mean over the three bias metrics of their generalized power mean over identities,
  M_p(m) = (mean_s m_s^p)^(1/p) with p = -5, which weights the worst identities most.

Also per axis (`identities.AXES`):
- the spread of each bias AUC (max - min over the axis's identities), and the AUC gap of issue 12
  (overall AUC minus the smallest subgroup, BPSN or BNSP AUC of the axis, floored at 0);
- at a decision threshold, the false-positive- and false-negative-rate gaps (max - min of the
  subgroup rates, as Fairlearn's `false_positive_rate_difference` takes it between groups; MinDiff's
  Civil Comments result, religion FPR gap 0.024 -> 0.006, is a gap of this kind, though how it grouped
  the examples is not reproduced here), and Dixon et al. 2018's equality differences ("Measuring and
  Mitigating Unintended Bias in Text Classification": FPED = sum over identities of
  |FPR - FPR_identity|, and FNED likewise).

Subgroups overlap (a comment can mention several identities), as they do in Civil Comments; each is
compared with its own background, so these are not the partition-based group metrics of Fairlearn's
MetricFrame. A figure resting on too few examples is NaN with its reason rather than a number:
`min_per_class` examples of each class are needed on each side of every comparison. Aggregates (power
means, final score, axis gaps) use only the identities all three AUCs are defined for, and name the
others as skipped with the reason.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from holo_jax.errors import HoloError
from holo_jax.fairness.identities import AXIS_OF, MEMBERSHIP_THRESHOLD, TOXIC_THRESHOLD, axes_of
from holo_jax.train.jsonl import jsonable
from holo_jax.train.roc_auc import roc_auc

# The competition's choices (Kaggle, Jigsaw Unintended Bias in Toxicity Classification, evaluation page).
POWER = -5.0
OVERALL_WEIGHT = 0.25
# Bias AUCs, in the order the final score averages them.
BIAS_METRICS = ("subgroup_auc", "bpsn_auc", "bnsp_auc")
# Fewer examples of a class than this on either side of a comparison leave the figure undefined.
# The competition used identities with more than 500 test examples; 10 per class keeps a small
# evaluation set usable while an AUC from a handful of pairs is still not reported as a finding.
MIN_PER_CLASS = 10
# A score at or above this is predicted toxic for FPR/FNR: the probability matching the 0.5 label
# threshold. Rates depend on it (Fairness Indicators reports several), so `bias_report` takes another.
DECISION_THRESHOLD = 0.5
NAN = float("nan")


# --- the metrics themselves, on boolean masks --------------------------------------------------

def subgroup_auc(toxic: np.ndarray, scores: np.ndarray, in_subgroup: np.ndarray) -> float:
    """AUC restricted to the subgroup (Borkan et al. 2019); NaN when it lacks a class."""
    return roc_auc(toxic[in_subgroup], scores[in_subgroup])


def bpsn_auc(toxic: np.ndarray, scores: np.ndarray, in_subgroup: np.ndarray) -> float:
    """AUC of the background's toxic examples against the subgroup's non-toxic ones; NaN when either
    set is empty. The positives of this AUC are exactly the toxic background examples."""
    keep = (in_subgroup & ~toxic) | (~in_subgroup & toxic)
    return roc_auc(toxic[keep], scores[keep])


def bnsp_auc(toxic: np.ndarray, scores: np.ndarray, in_subgroup: np.ndarray) -> float:
    """AUC of the subgroup's toxic examples against the background's non-toxic ones; NaN when either
    set is empty."""
    keep = (in_subgroup & toxic) | (~in_subgroup & ~toxic)
    return roc_auc(toxic[keep], scores[keep])


def generalized_mean(values: Sequence[float] | np.ndarray, p: float = POWER) -> float:
    """M_p = (mean of v^p)^(1/p) (the competition's `power_mean`), for values >= 0.

    p = 0 is the limit, the geometric mean. For p < 0 a zero value makes the mean 0 (its limit;
    numpy would get there through 0^p = inf with a warning)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise HoloError("the generalized mean of no values is undefined; pass at least one value.")
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise HoloError(f"the generalized mean takes finite values >= 0, got {v.tolist()}; drop undefined "
                        "(NaN) metrics first.")
    if not math.isfinite(p):
        raise HoloError(f"the power of a generalized mean must be finite, got {p}.")
    if p == 0:
        return 0.0 if np.any(v == 0) else float(np.exp(np.mean(np.log(v))))
    if p < 0 and np.any(v == 0):
        return 0.0
    return float(np.mean(v ** p) ** (1.0 / p))


def jigsaw_final_score(overall_auc: float, power_means: Sequence[float],
                       overall_weight: float = OVERALL_WEIGHT) -> float:
    """w * overall AUC + (1 - w) * the mean of the bias metrics' power means (the competition's
    `get_final_metric`: four weights of 0.25 when there are three bias metrics)."""
    return float(overall_weight * overall_auc + (1.0 - overall_weight) * float(np.mean(power_means)))


# --- the report ----------------------------------------------------------------------------

@dataclass(frozen=True)
class IdentityMetrics:
    """One identity's figures. `undefined` maps each NaN figure to why it is NaN."""
    identity: str
    axis: str
    subgroup_size: int  # examples that mention the identity (the competition's `subgroup_size`)
    subgroup_positives: int
    subgroup_negatives: int
    background_positives: int
    background_negatives: int
    subgroup_auc: float
    bpsn_auc: float
    bnsp_auc: float
    fpr: float  # false-positive rate on the subgroup at the report's threshold
    fnr: float  # false-negative rate on the subgroup at the report's threshold
    evaluated: bool  # all three bias AUCs defined: the identity enters power means and axis gaps
    skipped_reason: str | None
    undefined: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AxisMetrics:
    """One axis. `evaluated` are its identities with all three bias AUCs; `skipped` names the others."""
    axis: str
    evaluated: tuple[str, ...]
    skipped: dict[str, str]
    # max - min over `evaluated` of each bias AUC (needs two identities).
    auc_spread: dict[str, float]
    # Issue 12's gap: max(0, overall AUC - the smallest bias AUC of `evaluated`), and where it lies.
    auc_gap: float
    auc_gap_at: dict[str, str] | None  # {"identity": ..., "metric": ...}
    fpr_gap: float  # max - min of subgroup FPR over `evaluated`
    fnr_gap: float
    fpr_equality_difference: float  # Dixon et al. 2018: sum over `evaluated` of |FPR - FPR_identity|
    fnr_equality_difference: float
    undefined: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BiasReport:
    """Everything `bias_report` computes. `to_dict()` is plain Python (NaN as float); `to_json()` is
    strict JSON with NaN spelled "nan", as in the rest of holo_jax (train/jsonl.py)."""
    n_examples: int
    n_positives: int
    n_negatives: int
    threshold: float
    min_per_class: int
    power: float
    overall_weight: float
    overall_auc: float
    overall_fpr: float
    overall_fnr: float
    power_means: dict[str, float]  # per bias metric, over the evaluated identities
    final_score: float
    identities: tuple[IdentityMetrics, ...]
    axes: tuple[AxisMetrics, ...]
    skipped: dict[str, str]  # identity -> why it is not in the aggregates
    undefined: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(jsonable(self.to_dict()), allow_nan=False, **kwargs)


def bias_report(
    labels: np.ndarray,
    scores: np.ndarray,
    membership: np.ndarray,
    identities: Sequence[str],
    *,
    threshold: float = DECISION_THRESHOLD,
    min_per_class: int = MIN_PER_CLASS,
    power: float = POWER,
    overall_weight: float = OVERALL_WEIGHT,
) -> BiasReport:
    """The bias metrics of `scores` (probability of toxic, [n]) against `labels` ([n], 0/1) for the
    identities whose membership ([n, k], 0/1, column j for `identities[j]`) is given.

    `threshold`: a score >= threshold is predicted toxic (for FPR/FNR only; the AUCs use no threshold).
    `min_per_class`: the fewest examples of each class a comparison needs on each side; below it the
    figure is NaN with its reason. Set it to 1 to report every figure that is defined at all."""
    names = tuple(identities) if not isinstance(identities, str) else identities
    axes = axes_of(names)  # validates the names: unknown or repeated ones raise
    if not names:
        raise HoloError("no identities given; name at least one Civil Comments identity per membership column.")
    toxic, scores, member = _validated(labels, scores, membership, len(names))
    if not (isinstance(min_per_class, numbers.Integral) and not isinstance(min_per_class, bool)
            and min_per_class >= 1):
        raise HoloError(f"min_per_class must be an integer >= 1, got {min_per_class!r}.")
    if not (_is_real(threshold) and 0.0 <= threshold <= 1.0):
        raise HoloError(f"threshold must be a probability in [0, 1], got {threshold!r}.")
    if not (_is_real(overall_weight) and 0.0 <= overall_weight <= 1.0):
        raise HoloError(f"overall_weight must be in [0, 1], got {overall_weight!r}.")
    if not (_is_real(power) and math.isfinite(power)):
        raise HoloError(f"power must be a finite number, got {power!r}.")
    min_per_class, threshold, power = int(min_per_class), float(threshold), float(power)

    predicted = scores >= threshold  # inclusive, as the label threshold is (TOXIC_THRESHOLD)
    n_pos = int(toxic.sum())
    n_neg = toxic.size - n_pos
    undefined: dict[str, str] = {}

    def enough(count: int, kind: str, where: str = "") -> str | None:
        """None when `count` examples of class `kind` (`where`) suffice, else why not."""
        if count >= min_per_class:
            return None
        how_many = "no" if count == 0 else f"only {count}"
        return f"{how_many} {kind} example{'' if count == 1 else 's'}{where} (min_per_class={min_per_class})"

    # Each figure is computed only once its inputs pass `enough`; otherwise it is NaN with the reason.
    overall_auc = _defined(lambda: roc_auc(toxic, scores), undefined, "overall_auc",
                           enough(n_pos, "toxic"), enough(n_neg, "non-toxic"))
    overall_fpr = _defined(lambda: float(predicted[~toxic].mean()), undefined, "overall_fpr",
                           enough(n_neg, "non-toxic"))
    overall_fnr = _defined(lambda: float((~predicted[toxic]).mean()), undefined, "overall_fnr",
                           enough(n_pos, "toxic"))

    per_identity: list[IdentityMetrics] = []
    for j, name in enumerate(names):
        inside = member[:, j]
        sp, sn = int((inside & toxic).sum()), int((inside & ~toxic).sum())
        bp, bn = n_pos - sp, n_neg - sn
        why: dict[str, str] = {}
        inside_of, outside_of = f" in subgroup {name!r}", f" outside subgroup {name!r}"
        sub_pos, sub_neg = enough(sp, "toxic", inside_of), enough(sn, "non-toxic", inside_of)
        bg_pos, bg_neg = enough(bp, "toxic", outside_of), enough(bn, "non-toxic", outside_of)
        # Each figure needs its own two sides (see the module docstring), so e.g. a subgroup without
        # toxic examples still has a BPSN AUC.
        values = {
            "subgroup_auc": _defined(lambda: subgroup_auc(toxic, scores, inside), why, "subgroup_auc",
                                     sub_pos, sub_neg),
            "bpsn_auc": _defined(lambda: bpsn_auc(toxic, scores, inside), why, "bpsn_auc", bg_pos, sub_neg),
            "bnsp_auc": _defined(lambda: bnsp_auc(toxic, scores, inside), why, "bnsp_auc", sub_pos, bg_neg),
            "fpr": _defined(lambda: float(predicted[inside & ~toxic].mean()), why, "fpr", sub_neg),
            "fnr": _defined(lambda: float((~predicted[inside & toxic]).mean()), why, "fnr", sub_pos),
        }
        missing = [m for m in BIAS_METRICS if m in why]
        # Each of the four counts feeds at least one bias AUC, so these are all the reasons, each once.
        short = [r for r in (sub_pos, sub_neg, bg_pos, bg_neg) if r is not None]
        skipped_reason = "; ".join(short) if missing else None
        per_identity.append(IdentityMetrics(
            identity=name, axis=AXIS_OF[name], subgroup_size=int(inside.sum()),
            subgroup_positives=sp, subgroup_negatives=sn, background_positives=bp, background_negatives=bn,
            **values, evaluated=not missing, skipped_reason=skipped_reason, undefined=why))

    evaluated = [m for m in per_identity if m.evaluated]
    skipped = {m.identity: m.skipped_reason for m in per_identity if not m.evaluated}
    if evaluated:
        power_means = {k: generalized_mean([getattr(m, k) for m in evaluated], power) for k in BIAS_METRICS}
    else:
        power_means = {k: NAN for k in BIAS_METRICS}
        undefined["power_means"] = "no identity has all three bias AUCs defined (see skipped)"
    if "overall_auc" in undefined or "power_means" in undefined:
        final_score = NAN
        undefined["final_score"] = "; ".join(undefined[k] for k in ("overall_auc", "power_means") if k in undefined)
    else:
        final_score = jigsaw_final_score(overall_auc, list(power_means.values()), overall_weight)

    by_name = {m.identity: m for m in per_identity}
    axis_reports = tuple(
        _axis_metrics(axis, [by_name[n] for n in members], overall_auc, overall_fpr, overall_fnr, undefined)
        for axis, members in axes.items())

    return BiasReport(
        n_examples=int(toxic.size), n_positives=n_pos, n_negatives=n_neg, threshold=threshold,
        min_per_class=min_per_class, power=power, overall_weight=float(overall_weight),
        overall_auc=overall_auc, overall_fpr=overall_fpr, overall_fnr=overall_fnr,
        power_means=power_means, final_score=final_score, identities=tuple(per_identity), axes=axis_reports,
        skipped=skipped, undefined=undefined)


_NONE_EVALUATED = "no identity of the axis has all three bias AUCs defined"


def _axis_metrics(axis: str, members: list[IdentityMetrics], overall_auc: float, overall_fpr: float,
                  overall_fnr: float, report_undefined: dict[str, str]) -> AxisMetrics:
    evaluated = [m for m in members if m.evaluated]
    skipped = {m.identity: m.skipped_reason for m in members if not m.evaluated}
    why: dict[str, str] = {}
    if len(evaluated) >= 2:
        spread = {k: float(max(getattr(m, k) for m in evaluated) - min(getattr(m, k) for m in evaluated))
                  for k in BIAS_METRICS}
        fpr_gap = float(max(m.fpr for m in evaluated) - min(m.fpr for m in evaluated))
        fnr_gap = float(max(m.fnr for m in evaluated) - min(m.fnr for m in evaluated))
    else:
        # One identity has no spread; reporting 0 would read as perfect parity.
        have = f"only {evaluated[0].identity!r} has" if evaluated else "none of its identities have"
        reason = f"{have} all three bias AUCs defined on this axis; a gap between identities needs two"
        spread = {k: NAN for k in BIAS_METRICS}
        fpr_gap = fnr_gap = NAN
        why.update({"auc_spread": reason, "fpr_gap": reason, "fnr_gap": reason})

    if evaluated and math.isfinite(overall_auc):
        worst_value, worst_identity, worst_metric = min(
            (getattr(m, k), m.identity, k) for m in evaluated for k in BIAS_METRICS)
        auc_gap = max(0.0, float(overall_auc - worst_value))
        auc_gap_at: dict[str, str] | None = {"identity": worst_identity, "metric": worst_metric}
    else:
        auc_gap, auc_gap_at = NAN, None
        why["auc_gap"] = report_undefined.get("overall_auc") or _NONE_EVALUATED

    def equality_difference(rate: str, overall: float) -> float:
        if not evaluated or not math.isfinite(overall):
            why[f"{rate}_equality_difference"] = report_undefined.get(f"overall_{rate}") or _NONE_EVALUATED
            return NAN
        return float(sum(abs(overall - getattr(m, rate)) for m in evaluated))

    return AxisMetrics(
        axis=axis, evaluated=tuple(m.identity for m in evaluated), skipped=skipped, auc_spread=spread,
        auc_gap=auc_gap, auc_gap_at=auc_gap_at, fpr_gap=fpr_gap, fnr_gap=fnr_gap,
        fpr_equality_difference=equality_difference("fpr", overall_fpr),
        fnr_equality_difference=equality_difference("fnr", overall_fnr), undefined=why)


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _defined(compute: Callable[[], float], into: dict[str, str], key: str, *reasons: str | None) -> float:
    """`compute()` when every reason is None; else NaN, with the reasons recorded under `key`."""
    given = [r for r in reasons if r is not None]
    if given:
        into[key] = "; ".join(given)
        return NAN
    return compute()


def _validated(labels: Any, scores: Any, membership: Any, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels and membership as bool arrays and scores as float64, or one sentence saying what is wrong."""
    try:
        y = np.asarray(labels, dtype=np.float64)
        s = np.asarray(scores, dtype=np.float64)
        g = np.asarray(membership, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise HoloError(f"labels, scores and membership must be numeric arrays ({e}).") from None
    if y.ndim != 1 or y.size == 0:
        raise HoloError(f"labels must be a non-empty 1-D array, got shape {y.shape}.")
    n = y.size
    if s.shape != (n,):
        raise HoloError(f"scores have shape {s.shape} but labels have {n} entries; pass one score per example.")
    if g.shape != (n, k):
        raise HoloError(f"membership has shape {g.shape}, expected ({n}, {k}): one row per example and one "
                        "column per identity.")
    # The first offending entry is named, as a plain float (not numpy's repr), so it can be found.
    bad = np.flatnonzero((y != 0) & (y != 1))
    if bad.size:
        i = int(bad[0])
        raise HoloError(f"labels must be 0 or 1, found {float(y[i])!r} at index {i}; binarize fractional "
                        f"toxicity with label >= {TOXIC_THRESHOLD} first.")
    bad = np.flatnonzero(~np.isfinite(s) | (s < 0) | (s > 1))
    if bad.size:
        i = int(bad[0])
        raise HoloError(f"scores must be probabilities in [0, 1], found {float(s[i])!r} at index {i}; "
                        "pass the sigmoid or softmax of the logits.")
    bad_rows, bad_cols = np.nonzero((g != 0) & (g != 1))
    if bad_rows.size:
        r, c = int(bad_rows[0]), int(bad_cols[0])
        raise HoloError(f"membership must be 0 or 1, found {float(g[r, c])!r} at row {r}, column {c}; "
                        f"binarize fractional identity labels with >= {MEMBERSHIP_THRESHOLD} first.")
    return y == 1, s, g == 1
