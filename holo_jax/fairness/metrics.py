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

Also, for comparison with Dixon et al. 2018, each identity's *pinned AUC*: the AUC on the subgroup's
examples together with an equally sized sample of the whole data set (`pinned_auc`), and per axis its
equality difference, the sum over identities of |overall AUC - pinned AUC|. It is not a bias measure to
rely on: its authors (Borkan et al. 2019b, "Limitations of Pinned AUC for Measuring Unintended Bias",
arXiv:1903.02088) show that it moves with the subgroup's share of toxic examples, hiding or inflating a
bias unless every subgroup has the same label balance (as Dixon et al.'s synthetic test set had), which is
why subgroup, BPSN and BNSP AUC replace it; their own code marks it deprecated.

Every figure also gets a percentile bootstrap interval (`bootstrap` resamples of the examples, drawn with
replacement, `confidence` coverage, seeded), in the `intervals` of the object that reports it; see
`bias_report`.

Subgroups overlap (a comment can mention several identities), as they do in Civil Comments; each is
compared with its own background, so these are not the partition-based group metrics of Fairlearn's
MetricFrame. A figure resting on too few examples is NaN with its reason rather than a number:
`min_per_class` examples of each class are needed on each side of every comparison. Aggregates (power
means, final score, axis gaps) use only the identities all three AUCs are defined for, and name the
others as skipped with the reason. An interval that cannot be given is [NaN, NaN] with its reason in
`intervals_undefined`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse

from holo_jax.errors import HoloError
from holo_jax.fairness.identities import AXIS_OF, IDENTITIES, MEMBERSHIP_THRESHOLD, TOXIC_THRESHOLD, axes_of
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
# Bootstrap resamples (0: no intervals) and the intervals' coverage.
BOOTSTRAP = 1000
CONFIDENCE = 0.95
# A figure undefined in more than this share of the resamples (too few examples of a class drawn) gets no
# interval: one from the other resamples alone would describe only the draws lucky enough to define it.
MAX_UNDEFINED_RESAMPLES = 0.05
# Independent random streams from one `seed`: numpy SeedSequence entropy [seed, stream, ...].
_PINNED_STREAM, _BOOTSTRAP_STREAM = 0, 1
# Resamples are evaluated in blocks of at most this many [row, resample] counts, so memory stays bounded
# however large the evaluation set (4,080 rows x 1,000 resamples is one block).
_BLOCK_ELEMENTS = 1 << 22
NAN = float("nan")


# --- the metrics themselves, on boolean masks --------------------------------------------------

# Positives and negatives of each bias AUC, as masks over the rows, from the toxic and subgroup masks.
_SIDES: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "subgroup_auc": lambda toxic, inside: (inside & toxic, inside & ~toxic),
    "bpsn_auc": lambda toxic, inside: (~inside & toxic, inside & ~toxic),
    "bnsp_auc": lambda toxic, inside: (inside & toxic, ~inside & ~toxic),
}


def subgroup_auc(toxic: np.ndarray, scores: np.ndarray, in_subgroup: np.ndarray) -> float:
    """AUC restricted to the subgroup (Borkan et al. 2019); NaN when it lacks a class."""
    return _auc_between(scores, *_SIDES["subgroup_auc"](toxic, in_subgroup))


def bpsn_auc(toxic: np.ndarray, scores: np.ndarray, in_subgroup: np.ndarray) -> float:
    """AUC of the background's toxic examples against the subgroup's non-toxic ones; NaN when either
    set is empty. The positives of this AUC are exactly the toxic background examples."""
    return _auc_between(scores, *_SIDES["bpsn_auc"](toxic, in_subgroup))


def bnsp_auc(toxic: np.ndarray, scores: np.ndarray, in_subgroup: np.ndarray) -> float:
    """AUC of the subgroup's toxic examples against the background's non-toxic ones; NaN when either
    set is empty."""
    return _auc_between(scores, *_SIDES["bnsp_auc"](toxic, in_subgroup))


def _auc_between(scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> float:
    keep = positives | negatives
    return roc_auc(positives[keep], scores[keep])


def pinned_sample(n: int, size: int, seed: int, identity: str) -> np.ndarray:
    """Dixon et al. 2018's sample s(D) for `identity`: `size` distinct row indices out of n, drawn uniformly
    without replacement by `np.random.default_rng([seed, 0, IDENTITIES.index(identity)]).choice(n, size,
    replace=False)`. Keyed by the identity's place in the vocabulary, so an identity's sample, and with it
    its pinned AUC, does not change with the other identities reported alongside it."""
    rng = np.random.default_rng([seed, _PINNED_STREAM, IDENTITIES.index(identity)])
    return rng.choice(n, size=size, replace=False)


def _pinned_multiplicity(in_subgroup: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """How many times each row is in Dixon et al.'s pinned set: once for being in the subgroup, once for
    being in the sample. The sample comes from all of D, subgroup included, so a row can be in both and
    then counts twice: the second half stays a uniform sample of D (as concatenating the two halves
    leaves it), not one of D short of the overlap."""
    return in_subgroup.astype(np.int64) + np.bincount(sample, minlength=in_subgroup.size)


def pinned_auc(toxic: np.ndarray, scores: np.ndarray, in_subgroup: np.ndarray, sample: np.ndarray) -> float:
    """Dixon et al. 2018's pinned AUC: the AUC of the subgroup's examples together with `sample`, an
    equally sized sample of the whole data (`pinned_sample`); NaN when that set lacks a class.

    Caution (Borkan et al. 2019b, arXiv:1903.02088): it depends on the subgroup's share of toxic
    examples, not only on how the model ranks them, so compare it between subgroups only when their
    label balance is alike; subgroup, BPSN and BNSP AUC do not have this weakness."""
    multiplicity = _pinned_multiplicity(in_subgroup, sample)
    return weighted_roc_auc(scores, multiplicity * toxic, multiplicity * ~toxic).item()


def weighted_roc_auc(scores: np.ndarray, positive_weight: np.ndarray, negative_weight: np.ndarray) -> np.ndarray:
    """ROC AUC when row i counts `positive_weight[..., i]` times as a positive and `negative_weight[..., i]`
    times as a negative: the Mann-Whitney U statistic over weighted pairs, tied scores counted 1/2, i.e.
    scikit-learn's `roc_auc_score(y, scores, sample_weight=w)` with positive weight w*y and negative
    weight w*(1-y). Leading axes of the weights are independent weightings (bootstrap resamples: row
    counts), evaluated together; one AUC each, NaN where a class has no weight."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order, starts = _tie_levels(scores)
    return _levels_auc(np.add.reduceat(np.asarray(positive_weight)[..., order], starts, axis=-1),
                       np.add.reduceat(np.asarray(negative_weight)[..., order], starts, axis=-1))


def _tie_levels(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order that sorts `scores` ascending, and where in that order each run of equal scores starts."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    return order, np.flatnonzero(np.r_[s.size > 0, s[1:] != s[:-1]])


def _levels_auc(positive: np.ndarray, negative: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUC from the weight of positives and of negatives at each distinct score, ascending along `axis`:
    each positive beats the negatives below its score and ties those at it. 2U, computed here, is exact
    for integer weights (bootstrap counts)."""
    beaten_twice = 2 * np.cumsum(negative, axis=axis) - negative  # 2 x (below) + 1 x (tied)
    twice_u = np.sum(positive * beaten_twice, axis=axis)
    pairs = 2.0 * np.sum(positive, axis=axis) * np.sum(negative, axis=axis)
    return np.divide(twice_u, pairs, out=np.full(np.shape(pairs), NAN), where=pairs > 0)


def generalized_mean(values: Sequence[float] | np.ndarray, p: float = POWER) -> float:
    """M_p = (mean of v^p)^(1/p) (the competition's `power_mean`), for values >= 0.

    p = 0 is the limit, the geometric mean. For p <= 0 a zero value makes the mean 0 (its limit)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise HoloError("the generalized mean of no values is undefined; pass at least one value.")
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise HoloError(f"the generalized mean takes finite values >= 0, got {v.tolist()}; drop undefined "
                        "(NaN) metrics first.")
    if not math.isfinite(p):
        raise HoloError(f"the power of a generalized mean must be finite, got {p}.")
    return float(_power_mean(v, p))


def _power_mean(v: np.ndarray, p: float) -> np.ndarray:
    """M_p over the last axis of finite values >= 0 (`generalized_mean`), for many rows at once. A zero
    with p <= 0 reaches the limit 0 through IEEE infinities (0^p = inf, inf^(1/p) = 0; log 0 = -inf,
    exp(-inf) = 0), so only numpy's divide-by-zero warning is silenced, no value changed."""
    with np.errstate(divide="ignore"):
        if p == 0:
            return np.exp(np.mean(np.log(v), axis=-1))
        return np.mean(v ** p, axis=-1) ** (1.0 / p)


def jigsaw_final_score(overall_auc: float, power_means: Sequence[float],
                       overall_weight: float = OVERALL_WEIGHT) -> float:
    """w * overall AUC + (1 - w) * the mean of the bias metrics' power means (the competition's
    `get_final_metric`: four weights of 0.25 when there are three bias metrics)."""
    return float(_final_score(np.asarray(overall_auc), np.asarray(power_means), overall_weight))


def _final_score(overall_auc: np.ndarray, power_means: np.ndarray, overall_weight: float) -> np.ndarray:
    """`jigsaw_final_score` with the bias metrics on the first axis, for many resamples at once."""
    return overall_weight * overall_auc + (1.0 - overall_weight) * np.mean(power_means, axis=0)


# --- the report ----------------------------------------------------------------------------

# An interval: [low, high], both NaN when it cannot be given (its reason is in `intervals_undefined`).
Interval = tuple[float, float]


@dataclass(frozen=True)
class IdentityMetrics:
    """One identity's figures. `undefined` maps each NaN figure to why it is NaN; `intervals` holds the
    bootstrap interval of each figure in FIGURES, and `intervals_undefined` why one is [NaN, NaN]."""
    FIGURES: ClassVar[tuple[str, ...]] = ("subgroup_auc", "bpsn_auc", "bnsp_auc", "pinned_auc", "fpr", "fnr")
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
    pinned_auc: float  # Dixon et al. 2018; depends on the subgroup's label balance (module docstring)
    fpr: float  # false-positive rate on the subgroup at the report's threshold
    fnr: float  # false-negative rate on the subgroup at the report's threshold
    evaluated: bool  # all three bias AUCs defined: the identity enters power means and axis gaps
    skipped_reason: str | None
    undefined: dict[str, str] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    intervals_undefined: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AxisMetrics:
    """One axis. `evaluated` are its identities with all three bias AUCs; `skipped` names the others.
    Intervals as in IdentityMetrics; those of `auc_spread` are keyed "auc_spread.<metric>"."""
    FIGURES: ClassVar[tuple[str, ...]] = (
        "auc_spread", "auc_gap", "fpr_gap", "fnr_gap", "fpr_equality_difference", "fnr_equality_difference",
        "pinned_auc_equality_difference")
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
    pinned_auc_equality_difference: float  # Dixon et al. 2018: sum over `evaluated` of |AUC - pinned AUC|
    undefined: dict[str, str] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    intervals_undefined: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BiasReport:
    """Everything `bias_report` computes. `to_dict()` is plain Python (NaN as float); `to_json()` is
    strict JSON with NaN spelled "nan", as in the rest of holo_jax (train/jsonl.py). Intervals as in
    IdentityMetrics; those of `power_means` are keyed "power_means.<metric>"."""
    FIGURES: ClassVar[tuple[str, ...]] = ("overall_auc", "overall_fpr", "overall_fnr", "power_means", "final_score")
    n_examples: int
    n_positives: int
    n_negatives: int
    threshold: float
    min_per_class: int
    power: float
    overall_weight: float
    seed: int
    bootstrap: int  # resamples behind the intervals; 0: no intervals
    confidence: float
    overall_auc: float
    overall_fpr: float
    overall_fnr: float
    power_means: dict[str, float]  # per bias metric, over the evaluated identities
    final_score: float
    identities: tuple[IdentityMetrics, ...]
    axes: tuple[AxisMetrics, ...]
    skipped: dict[str, str]  # identity -> why it is not in the aggregates
    undefined: dict[str, str] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    intervals_undefined: dict[str, str] = field(default_factory=dict)

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
    seed: int = 0,
    bootstrap: int = BOOTSTRAP,
    confidence: float = CONFIDENCE,
) -> BiasReport:
    """The bias metrics of `scores` (probability of toxic, [n]) against `labels` ([n], 0/1) for the
    identities whose membership ([n, k], 0/1, column j for `identities[j]`) is given.

    `threshold`: a score >= threshold is predicted toxic (for FPR/FNR only; the AUCs use no threshold).
    `min_per_class`: the fewest examples of each class a comparison needs on each side; below it the
    figure is NaN with its reason. Set it to 1 to report every figure that is defined at all.
    `seed`: fixes the pinned AUC's samples (`pinned_sample`) and the bootstrap's resamples, so the same
    inputs give the same report.
    `bootstrap`: how many resamples of the n examples (drawn with replacement) the intervals rest on; 0
    computes none. Each figure's interval is the percentile interval of its values over the resamples,
    covering `confidence` (the (1-c)/2 and (1+c)/2 quantiles). A resample is a new data set of n rows:
    each figure is computed on it as on the data, with the same pinned samples, the same identities in
    the aggregates, and undefined when it has fewer than `min_per_class` examples of a class on a side;
    a figure undefined in more than MAX_UNDEFINED_RESAMPLES of them gets [NaN, NaN] and a reason. The
    intervals describe sampling noise of the evaluation data only, not of training."""
    names = tuple(identities) if not isinstance(identities, str) else identities
    axes = axes_of(names)  # validates the names: unknown or repeated ones raise
    if not names:
        raise HoloError("no identities given; name at least one Civil Comments identity per membership column.")
    toxic, scores, member = _validated(labels, scores, membership, len(names))
    if not (_is_integer(min_per_class) and min_per_class >= 1):
        raise HoloError(f"min_per_class must be an integer >= 1, got {min_per_class!r}.")
    if not (_is_real(threshold) and 0.0 <= threshold <= 1.0):
        raise HoloError(f"threshold must be a probability in [0, 1], got {threshold!r}.")
    if not (_is_real(overall_weight) and 0.0 <= overall_weight <= 1.0):
        raise HoloError(f"overall_weight must be in [0, 1], got {overall_weight!r}.")
    if not (_is_real(power) and math.isfinite(power)):
        raise HoloError(f"power must be a finite number, got {power!r}.")
    if not (_is_integer(seed) and seed >= 0):
        raise HoloError(f"seed must be an integer >= 0, got {seed!r}.")
    if not (_is_integer(bootstrap) and bootstrap >= 0):
        raise HoloError(f"bootstrap must be an integer >= 0 (resamples; 0 for no intervals), got {bootstrap!r}.")
    if not (_is_real(confidence) and 0.0 < confidence < 1.0):
        raise HoloError(f"confidence must be in (0, 1), got {confidence!r}.")
    min_per_class, threshold, power = int(min_per_class), float(threshold), float(power)
    seed, bootstrap, confidence = int(seed), int(bootstrap), float(confidence)

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
    samples: list[np.ndarray] = []
    for j, name in enumerate(names):
        inside = member[:, j]
        sp, sn = int((inside & toxic).sum()), int((inside & ~toxic).sum())
        bp, bn = n_pos - sp, n_neg - sn
        sample = pinned_sample(toxic.size, sp + sn, seed, name)
        samples.append(sample)
        pp, pn = sp + int(toxic[sample].sum()), sn + int((~toxic[sample]).sum())
        why: dict[str, str] = {}
        inside_of, outside_of, pinned_of = (f" in subgroup {name!r}", f" outside subgroup {name!r}",
                                            f" in the pinned set of {name!r}")
        sub_pos, sub_neg = enough(sp, "toxic", inside_of), enough(sn, "non-toxic", inside_of)
        bg_pos, bg_neg = enough(bp, "toxic", outside_of), enough(bn, "non-toxic", outside_of)
        # Each figure needs its own two sides (see the module docstring), so e.g. a subgroup without
        # toxic examples still has a BPSN AUC.
        values = {
            "subgroup_auc": _defined(lambda: subgroup_auc(toxic, scores, inside), why, "subgroup_auc",
                                     sub_pos, sub_neg),
            "bpsn_auc": _defined(lambda: bpsn_auc(toxic, scores, inside), why, "bpsn_auc", bg_pos, sub_neg),
            "bnsp_auc": _defined(lambda: bnsp_auc(toxic, scores, inside), why, "bnsp_auc", sub_pos, bg_neg),
            "pinned_auc": _defined(lambda: pinned_auc(toxic, scores, inside, sample), why, "pinned_auc",
                                   enough(pp, "toxic", pinned_of), enough(pn, "non-toxic", pinned_of)),
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

    report = BiasReport(
        n_examples=int(toxic.size), n_positives=n_pos, n_negatives=n_neg, threshold=threshold,
        min_per_class=min_per_class, power=power, overall_weight=float(overall_weight), seed=seed,
        bootstrap=bootstrap, confidence=confidence, overall_auc=overall_auc, overall_fpr=overall_fpr,
        overall_fnr=overall_fnr, power_means=power_means, final_score=final_score,
        identities=tuple(per_identity), axes=axis_reports, skipped=skipped, undefined=undefined)
    if not bootstrap:
        return report
    resampled = _ResampledFigures(report, toxic, scores, member, predicted, samples)
    return _with_intervals(report, _bootstrap_values(resampled, toxic.size, bootstrap, seed))


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

    def equality_difference(figure: str, overall: float, overall_key: str) -> float:
        if not evaluated or not math.isfinite(overall):
            why[f"{figure}_equality_difference"] = report_undefined.get(overall_key) or _NONE_EVALUATED
            return NAN
        return float(sum(abs(overall - getattr(m, figure)) for m in evaluated))

    return AxisMetrics(
        axis=axis, evaluated=tuple(m.identity for m in evaluated), skipped=skipped, auc_spread=spread,
        auc_gap=auc_gap, auc_gap_at=auc_gap_at, fpr_gap=fpr_gap, fnr_gap=fnr_gap,
        fpr_equality_difference=equality_difference("fpr", overall_fpr, "overall_fpr"),
        fnr_equality_difference=equality_difference("fnr", overall_fnr, "overall_fnr"),
        pinned_auc_equality_difference=equality_difference("pinned_auc", overall_auc, "overall_auc"), undefined=why)


# --- bootstrap intervals ----------------------------------------------------------------------
# A figure's replicates are keyed (kind, name, figure): kind "report" (name ""), "identity" or "axis".

def _figures(of: IdentityMetrics | AxisMetrics | BiasReport) -> dict[str, float]:
    """The FIGURES of a report object by name, those in a dict (power_means, auc_spread) as "dict.key"."""
    out: dict[str, float] = {}
    for name in of.FIGURES:
        value = getattr(of, name)
        if isinstance(value, dict):
            out.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            out[name] = value
    return out


def _resample_counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """[n, b] float: how many times each of n rows is drawn into each of b resamples of n rows drawn with
    replacement (resample r draws the rows `rng.integers(0, n, size=(b, n))[r]`). Rows first, so that
    summing rows over a comparison reads each row's counts of every resample at once."""
    draws = rng.integers(0, n, size=(b, n))
    counts = np.bincount((draws * b + np.arange(b)[:, None]).ravel(), minlength=n * b)
    return counts.reshape(n, b).astype(np.float64)


def _level_sums(scores: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> scipy.sparse.csr_array:
    """[2L, n]: times row counts, the weight of the positives (first L rows) and of the negatives (last L)
    at each of the L distinct scores an AUC reads, ascending; `positive` and `negative` ([n]) are how many
    times each row is one. An AUC on resamples is then one sparse product and `_levels_auc`."""
    rows = np.flatnonzero((positive > 0) | (negative > 0))
    order, starts = _tie_levels(scores[rows])
    rows = rows[order]
    level = np.searchsorted(starts, np.arange(rows.size), side="right") - 1  # of each row, in `order`
    is_pos, is_neg = positive[rows] > 0, negative[rows] > 0
    return scipy.sparse.csr_array(
        (np.r_[positive[rows][is_pos], negative[rows][is_neg]].astype(np.float64),
         (np.r_[level[is_pos], starts.size + level[is_neg]], np.r_[rows[is_pos], rows[is_neg]])),
        shape=(2 * starts.size, scores.size))


class _ResampledFigures:
    """The report's figures recomputed on resamples, a block at a time: [n, b] row counts in, one [b]
    array out for each figure the report defines. Each is the same function of its examples as in the
    report, undefined (NaN) by the same rule, and aggregates use the report's evaluated identities: a
    resample in which one of them lacks a figure leaves the aggregate undefined, rather than computed
    over other identities than the figure it stands for."""

    def __init__(self, report: BiasReport, toxic: np.ndarray, scores: np.ndarray, member: np.ndarray,
                 predicted: np.ndarray, samples: list[np.ndarray]):
        self._report = report
        defined = {("report", "", k) for k, v in _figures(report).items() if math.isfinite(v)}
        aucs = {("report", "", "overall_auc"): (toxic, ~toxic)}
        # A rate: the examples predicted wrong over the examples of the class, both as row masks.
        rates = {("report", "", "overall_fpr"): (predicted & ~toxic, ~toxic),
                 ("report", "", "overall_fnr"): (~predicted & toxic, toxic)}
        for j, m in enumerate(report.identities):
            inside = member[:, j]
            defined |= {("identity", m.identity, k) for k, v in _figures(m).items() if math.isfinite(v)}
            aucs.update({("identity", m.identity, k): _SIDES[k](toxic, inside) for k in BIAS_METRICS})
            multiplicity = _pinned_multiplicity(inside, samples[j])
            aucs["identity", m.identity, "pinned_auc"] = (multiplicity * toxic, multiplicity * ~toxic)
            rates["identity", m.identity, "fpr"] = (inside & ~toxic & predicted, inside & ~toxic)
            rates["identity", m.identity, "fnr"] = (inside & toxic & ~predicted, inside & toxic)
        # Only figures the report defines: the others' intervals are undefined for the report's reason.
        self._aucs = {key: _level_sums(scores, *sides) for key, sides in aucs.items() if key in defined}
        # Every rate's two counts are rows of one matrix: a single product per block of resamples.
        self._rate_keys = [key for key in rates if key in defined]
        self._rates = scipy.sparse.csr_array(
            np.array([rates[key][i] for key in self._rate_keys for i in (0, 1)], dtype=np.float64)
            .reshape(-1, toxic.size))

    def __call__(self, counts: np.ndarray) -> dict[tuple[str, str, str], np.ndarray]:
        m = self._report.min_per_class
        values: dict[tuple[str, str, str], np.ndarray] = {}
        for key, level_sums in self._aucs.items():
            positive, negative = np.split(level_sums @ counts, 2)
            auc = _levels_auc(positive, negative, axis=0)
            auc[(positive.sum(axis=0) < m) | (negative.sum(axis=0) < m)] = NAN
            values[key] = auc
        wrong, of_class = (self._rates @ counts).reshape(-1, 2, counts.shape[1]).transpose(1, 0, 2)
        rates = np.divide(wrong, of_class, out=np.full_like(wrong, NAN), where=of_class >= m)
        values.update(zip(self._rate_keys, rates))
        self._aggregates(values)
        return values

    def _aggregates(self, values: dict[tuple[str, str, str], np.ndarray]) -> None:
        """Adds the power means, final score and axis figures to `values`, each where the report has it."""
        report = self._report

        def of(identities: Sequence[str], figure: str) -> np.ndarray:  # [b, identities]
            return np.stack([values["identity", name, figure] for name in identities], axis=-1)

        evaluated = [m.identity for m in report.identities if m.evaluated]
        if evaluated:
            for k in BIAS_METRICS:
                per_identity = of(evaluated, k)
                defined = np.all(np.isfinite(per_identity), axis=-1)
                power_mean = np.full(defined.shape, NAN)
                power_mean[defined] = _power_mean(per_identity[defined], report.power)
                values["report", "", f"power_means.{k}"] = power_mean
        if math.isfinite(report.final_score):
            power_means = np.stack([values["report", "", f"power_means.{k}"] for k in BIAS_METRICS])
            values["report", "", "final_score"] = _final_score(
                values["report", "", "overall_auc"], power_means, report.overall_weight)
        for a in report.axes:
            figures = {}  # NaN in a resample propagates through min, max and sum, as it should
            if len(a.evaluated) >= 2:
                for k in BIAS_METRICS:
                    figures[f"auc_spread.{k}"] = np.max(of(a.evaluated, k), -1) - np.min(of(a.evaluated, k), -1)
                for rate in ("fpr", "fnr"):
                    figures[f"{rate}_gap"] = np.max(of(a.evaluated, rate), -1) - np.min(of(a.evaluated, rate), -1)
            overall = {f: values.get(("report", "", f"overall_{f}")) for f in ("auc", "fpr", "fnr")}
            if math.isfinite(a.auc_gap):
                worst = np.min(np.concatenate([of(a.evaluated, k) for k in BIAS_METRICS], axis=-1), -1)
                figures["auc_gap"] = np.maximum(0.0, overall["auc"] - worst)
            for figure, against in (("fpr", "fpr"), ("fnr", "fnr"), ("pinned_auc", "auc")):
                if math.isfinite(getattr(a, f"{figure}_equality_difference")):
                    figures[f"{figure}_equality_difference"] = np.sum(
                        np.abs(overall[against][:, None] - of(a.evaluated, figure)), axis=-1)
            values.update({("axis", a.axis, f): v for f, v in figures.items()})


def _bootstrap_values(resampled: _ResampledFigures, n: int, resamples: int,
                      seed: int) -> dict[tuple[str, str, str], np.ndarray]:
    """Each defined figure in each of `resamples` resamples of the n rows, drawn from
    `np.random.default_rng([seed, _BOOTSTRAP_STREAM])` (one block after another, `_resample_counts`) and
    evaluated a block of resamples at a time."""
    rng = np.random.default_rng([seed, _BOOTSTRAP_STREAM])
    block = max(1, _BLOCK_ELEMENTS // n)
    parts = [resampled(_resample_counts(rng, min(block, resamples - start), n))
             for start in range(0, resamples, block)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _percentile_interval(values: np.ndarray, confidence: float, min_per_class: int) -> tuple[Interval, str | None]:
    """The percentile interval of a figure's resampled values, or [NaN, NaN] and why."""
    undefined = int(np.count_nonzero(np.isnan(values)))
    if undefined > MAX_UNDEFINED_RESAMPLES * values.size:
        return (NAN, NAN), (f"undefined in {undefined} of {values.size} bootstrap resamples, more than the "
                            f"{MAX_UNDEFINED_RESAMPLES:.0%} allowed: they drew fewer than min_per_class="
                            f"{min_per_class} examples of a class for a comparison it rests on")
    low, high = np.quantile(values[~np.isnan(values)], [(1.0 - confidence) / 2, (1.0 + confidence) / 2])
    return (float(low), float(high)), None


def _with_intervals(report: BiasReport, values: dict[tuple[str, str, str], np.ndarray]) -> BiasReport:
    """`report` with the intervals of every figure filled in from its resampled `values`."""
    def attach(of: Any, kind: str, name: str) -> Any:
        intervals: dict[str, Interval] = {}
        why: dict[str, str] = {}
        for figure, point in _figures(of).items():
            if math.isnan(point):  # a figure in a dict shares the dict's reason
                intervals[figure], why[figure] = (NAN, NAN), of.undefined[figure.partition(".")[0]]
                continue
            intervals[figure], reason = _percentile_interval(values[kind, name, figure], report.confidence,
                                                             report.min_per_class)
            if reason is not None:
                why[figure] = reason
        return dataclasses.replace(of, intervals=intervals, intervals_undefined=why)

    return attach(dataclasses.replace(
        report, identities=tuple(attach(m, "identity", m.identity) for m in report.identities),
        axes=tuple(attach(a, "axis", a.axis) for a in report.axes)), "report", "")


def _is_integer(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


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
