"""Bias metrics (Borkan et al. 2019) against independent computations: scikit-learn's roc_auc_score and
confusion_matrix on subsets built the way the Jigsaw competition's benchmark kernel builds them, a
hand-computed example, and the power mean's formula; Dixon et al. 2018's pinned AUC on the sample
rebuilt from its documented recipe; the bootstrap intervals against sklearn on the resampled rows
themselves. Host-only numpy; nothing here compiles."""
import json
import math
import time

import numpy as np
import pytest
from scipy.stats import pmean
from sklearn.metrics import confusion_matrix, roc_auc_score

from holo_jax.errors import HoloError
from holo_jax.fairness import AXIS_OF, bias_report, generalized_mean, jigsaw_final_score, weighted_roc_auc
from holo_jax.fairness import IDENTITIES as VOCABULARY
from holo_jax.fairness.metrics import MAX_UNDEFINED_RESAMPLES, _ResampledFigures, pinned_sample

TOL = 1e-12
IDENTITIES = ("male", "female", "christian", "muslim", "jewish", "black", "white")


def planted(seed: int, n: int = 3000, decimals: int | None = None):
    """Random labels and overlapping memberships; scores separate the classes, plus two planted biases:
    every `muslim` example scores higher (non-toxic mentions look toxic: low BPSN, high BNSP) and toxic
    `black` examples score lower (missed: low BNSP and subgroup AUC)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.int64)
    member = (rng.random((n, len(IDENTITIES))) < 0.12).astype(np.int64)
    logit = 1.5 * (2 * y - 1) + rng.normal(size=n)
    logit += 1.5 * member[:, IDENTITIES.index("muslim")]
    logit -= 1.5 * member[:, IDENTITIES.index("black")] * y
    scores = 1.0 / (1.0 + np.exp(-logit))
    if decimals is not None:  # many tied scores, within and across classes
        scores = np.round(scores, decimals)
    return y, scores, member


# --- references, written apart from holo_jax's code --------------------------------------------

def ref_subgroup_auc(y, s, g):
    return roc_auc_score(y[g], s[g])


def ref_bpsn_auc(y, s, g):
    # As the competition's benchmark kernel: the subgroup's negatives, then the background's positives.
    sub_neg, bg_pos = s[g & (y == 0)], s[~g & (y == 1)]
    return roc_auc_score(np.r_[np.zeros(sub_neg.size), np.ones(bg_pos.size)], np.r_[sub_neg, bg_pos])


def ref_bnsp_auc(y, s, g):
    sub_pos, bg_neg = s[g & (y == 1)], s[~g & (y == 0)]
    return roc_auc_score(np.r_[np.ones(sub_pos.size), np.zeros(bg_neg.size)], np.r_[sub_pos, bg_neg])


def ref_rates(y, s, threshold=0.5):
    tn, fp, fn, tp = confusion_matrix(y, (s >= threshold).astype(int), labels=[0, 1]).ravel()
    return fp / (fp + tn), fn / (fn + tp)


def kaggle_power_mean(series, p):
    # The competition's `power_mean`, verbatim in substance.
    return np.power(sum(np.power(series, p)) / len(series), 1 / p)


def point_report(*args, **kwargs):
    """The report without intervals: the tests of the figures themselves need no resampling, which
    would only slow them (the figures do not depend on it: see
    test_default_call_adds_intervals_and_leaves_the_figures_alone)."""
    return bias_report(*args, bootstrap=0, **kwargs)


def by_identity(report):
    return {m.identity: m for m in report.identities}


def by_axis(report):
    return {a.axis: a for a in report.axes}


# --- every figure against scikit-learn ------------------------------------------------------

@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("seed", range(3))
def test_every_figure_matches_sklearn(seed, decimals):
    y, s, member = planted(seed, decimals=decimals)
    report = point_report(y, s, member, IDENTITIES, min_per_class=1)
    assert report.overall_auc == pytest.approx(roc_auc_score(y, s), abs=TOL)
    fpr, fnr = ref_rates(y, s)
    assert (report.overall_fpr, report.overall_fnr) == pytest.approx((fpr, fnr), abs=TOL)
    assert (report.n_examples, report.n_positives, report.n_negatives) == (y.size, y.sum(), (y == 0).sum())
    got = by_identity(report)
    for j, name in enumerate(IDENTITIES):
        g, m = member[:, j] == 1, got[name]
        assert m.axis == AXIS_OF[name] and m.evaluated and m.undefined == {}
        assert m.subgroup_size == g.sum()
        assert (m.subgroup_positives, m.subgroup_negatives) == ((g & (y == 1)).sum(), (g & (y == 0)).sum())
        assert (m.background_positives, m.background_negatives) == ((~g & (y == 1)).sum(), (~g & (y == 0)).sum())
        assert m.subgroup_auc == pytest.approx(ref_subgroup_auc(y, s, g), abs=TOL)
        assert m.bpsn_auc == pytest.approx(ref_bpsn_auc(y, s, g), abs=TOL)
        assert m.bnsp_auc == pytest.approx(ref_bnsp_auc(y, s, g), abs=TOL)
        assert (m.fpr, m.fnr) == pytest.approx(ref_rates(y[g], s[g]), abs=TOL)


def test_planted_bias_shows_where_it_was_planted():
    y, s, member = planted(0)
    got = by_identity(point_report(y, s, member, IDENTITIES))
    others = [got[n] for n in IDENTITIES if n not in ("muslim", "black")]
    # Scores raised for every muslim example: their non-toxic comments outrank toxic background ones.
    assert got["muslim"].bpsn_auc < min(m.bpsn_auc for m in others) - 0.1
    assert got["muslim"].bnsp_auc > max(m.bnsp_auc for m in others)
    assert got["muslim"].fpr > max(m.fpr for m in others) + 0.2
    # Toxic black examples scored lower: missed against the background and within the subgroup.
    assert got["black"].bnsp_auc < min(m.bnsp_auc for m in others) - 0.1
    assert got["black"].subgroup_auc < min(m.subgroup_auc for m in others) - 0.05
    assert got["black"].fnr > max(m.fnr for m in others) + 0.2


def test_final_score_matches_the_competition_formula():
    y, s, member = planted(1)
    report = point_report(y, s, member, IDENTITIES)
    columns = [member[:, j] == 1 for j in range(len(IDENTITIES))]
    means = [kaggle_power_mean([ref(y, s, g) for g in columns], -5)
             for ref in (ref_subgroup_auc, ref_bpsn_auc, ref_bnsp_auc)]
    assert list(report.power_means.values()) == pytest.approx(means, abs=1e-12)
    # score = w0 * overall AUC + sum_a w_a M_p(m_a), all four weights 0.25 (Kaggle evaluation page).
    expected = 0.25 * roc_auc_score(y, s) + sum(0.25 * m for m in means)
    assert report.final_score == pytest.approx(expected, abs=1e-12)
    assert jigsaw_final_score(report.overall_auc, means) == pytest.approx(expected, abs=1e-12)
    # The power mean sits below the arithmetic mean: the worst identity pulls it down.
    assert report.power_means["bpsn_auc"] < np.mean([m.bpsn_auc for m in report.identities])


# --- the hand-made example ----------------------------------------------------------------

def hand_example():
    # subgroup ("muslim"): toxic 0.6, 0.9; non-toxic 0.7, 0.5
    # background:          toxic 0.8, 0.5; non-toxic 0.3, 0.1
    scores = np.array([0.6, 0.9, 0.7, 0.5, 0.8, 0.5, 0.3, 0.1])
    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    member = np.array([[1], [1], [1], [1], [0], [0], [0], [0]])
    return labels, scores, member


def test_hand_computed_example():
    report = bias_report(*hand_example(), ("muslim",), min_per_class=1)
    m = report.identities[0]
    # Subgroup AUC: pairs (toxic, non-toxic) in the subgroup: 0.6>0.7 no, 0.6>0.5, 0.9>0.7, 0.9>0.5 -> 3/4.
    assert m.subgroup_auc == 0.75
    # BPSN: background toxic {0.8, 0.5} vs subgroup non-toxic {0.7, 0.5}: 0.8 beats both, 0.5 loses to
    # 0.7 and ties 0.5 (half) -> 2.5/4.
    assert m.bpsn_auc == 0.625
    # BNSP: subgroup toxic {0.6, 0.9} vs background non-toxic {0.3, 0.1}: all four pairs -> 1.
    assert m.bnsp_auc == 1.0
    # Overall: 0.6 beats 3 of {0.7, 0.5, 0.3, 0.1}, 0.9 and 0.8 all 4, 0.5 two and a tie -> 13.5/16.
    assert report.overall_auc == 13.5 / 16
    # At threshold 0.5 (inclusive) both subgroup non-toxic comments are flagged, no toxic one is missed.
    assert (m.fpr, m.fnr) == (1.0, 0.0)
    assert (report.overall_fpr, report.overall_fnr) == (0.5, 0.0)
    # One identity: each power mean is its own value, and the final score follows.
    assert report.power_means == {"subgroup_auc": 0.75, "bpsn_auc": 0.625, "bnsp_auc": 1.0}
    assert report.final_score == pytest.approx(0.25 * 13.5 / 16 + 0.75 * (0.75 + 0.625 + 1.0) / 3, abs=TOL)
    religion = report.axes[0]
    assert religion.axis == "religion" and religion.evaluated == ("muslim",)
    assert religion.auc_gap == pytest.approx(13.5 / 16 - 0.625, abs=TOL)
    assert religion.auc_gap_at == {"identity": "muslim", "metric": "bpsn_auc"}
    # Dixon et al. 2018: |FPR - FPR_muslim| = |0.5 - 1|, |FNR - FNR_muslim| = 0.
    assert (religion.fpr_equality_difference, religion.fnr_equality_difference) == (0.5, 0.0)
    # One identity has no spread; NaN with the reason, never 0 (which would read as parity).
    assert all(math.isnan(v) for v in religion.auc_spread.values())
    assert math.isnan(religion.fpr_gap) and math.isnan(religion.fnr_gap)
    assert religion.undefined["auc_spread"] == ("only 'muslim' has all three bias AUCs defined on this axis; "
                                                "a gap between identities needs two")


def test_a_higher_threshold_flags_fewer():
    report = bias_report(*hand_example(), ("muslim",), min_per_class=1, threshold=0.65)
    m = report.identities[0]
    assert (m.fpr, m.fnr) == (0.5, 0.5)  # 0.7 flagged, 0.5 not; 0.6 missed, 0.9 caught
    assert (report.overall_fpr, report.overall_fnr) == (0.25, 0.5)


# --- the generalized mean -----------------------------------------------------------------

@pytest.mark.parametrize("p", [-5.0, -2.0, -0.5, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("seed", range(3))
def test_generalized_mean_is_the_formula(seed, p):
    v = np.random.default_rng(seed).uniform(0.05, 1.0, size=9)
    direct = (np.sum(v ** p) / v.size) ** (1 / p)
    assert generalized_mean(v, p) == pytest.approx(direct, rel=1e-12)
    assert generalized_mean(v, p) == pytest.approx(pmean(v, p), rel=1e-12)
    assert v.min() <= generalized_mean(v, p) <= v.max()


def test_generalized_mean_limits_and_order():
    v = np.array([0.9, 0.8, 0.6])
    assert generalized_mean(v, 1.0) == pytest.approx(v.mean(), rel=1e-15)
    assert generalized_mean(v, 0.0) == pytest.approx(np.prod(v) ** (1 / 3), rel=1e-12)
    assert generalized_mean(v, -5.0) < generalized_mean(v, -1.0) < generalized_mean(v, 0.0) < v.mean()
    # p = -5 is close to the minimum: the worst identity dominates.
    assert generalized_mean(v, -5.0) == pytest.approx(0.6 * (1 / 3 + (0.6 / 0.8) ** 5 / 3 + (0.6 / 0.9) ** 5 / 3)
                                                      ** (-1 / 5), rel=1e-12)
    assert generalized_mean([0.0, 0.9], -5.0) == 0.0  # the limit, without a divide-by-zero warning
    assert generalized_mean([0.7], -5.0) == pytest.approx(0.7, rel=1e-15)


@pytest.mark.parametrize("values, message", [
    ([], "the generalized mean of no values is undefined"),
    ([0.5, float("nan")], "takes finite values >= 0"),
    ([0.5, -0.1], "takes finite values >= 0"),
])
def test_generalized_mean_rejects(values, message):
    with pytest.raises(HoloError, match=message):
        generalized_mean(values, -5.0)


# --- per-axis gaps ------------------------------------------------------------------------

def test_axis_gaps_match_direct_computation():
    y, s, member = planted(2)
    report = point_report(y, s, member, IDENTITIES)
    axes = by_axis(report)
    assert list(axes) == ["gender", "religion", "ethnicity"]
    overall_fpr, overall_fnr = ref_rates(y, s)
    refs = {"subgroup_auc": ref_subgroup_auc, "bpsn_auc": ref_bpsn_auc, "bnsp_auc": ref_bnsp_auc}
    for axis, names in [("gender", ("male", "female")), ("religion", ("christian", "muslim", "jewish")),
                        ("ethnicity", ("black", "white"))]:
        a = axes[axis]
        assert a.evaluated == names and a.skipped == {} and a.undefined == {}
        columns = {n: member[:, IDENTITIES.index(n)] == 1 for n in names}
        values = {k: {n: ref(y, s, g) for n, g in columns.items()} for k, ref in refs.items()}
        for k in refs:
            assert a.auc_spread[k] == pytest.approx(max(values[k].values()) - min(values[k].values()), abs=TOL)
        worst = min((v, n, k) for k in refs for n, v in values[k].items())
        assert a.auc_gap == pytest.approx(max(0.0, roc_auc_score(y, s) - worst[0]), abs=TOL)
        assert a.auc_gap_at == {"identity": worst[1], "metric": worst[2]}
        rates = {n: ref_rates(y[g], s[g]) for n, g in columns.items()}
        fprs, fnrs = [r[0] for r in rates.values()], [r[1] for r in rates.values()]
        assert a.fpr_gap == pytest.approx(max(fprs) - min(fprs), abs=TOL)
        assert a.fnr_gap == pytest.approx(max(fnrs) - min(fnrs), abs=TOL)
        assert a.fpr_equality_difference == pytest.approx(sum(abs(overall_fpr - f) for f in fprs), abs=TOL)
        assert a.fnr_equality_difference == pytest.approx(sum(abs(overall_fnr - f) for f in fnrs), abs=TOL)
    # The planted religion bias is the widest BPSN spread and sits at muslim.
    assert axes["religion"].auc_gap_at == {"identity": "muslim", "metric": "bpsn_auc"}
    assert axes["religion"].auc_spread["bpsn_auc"] > 0.1 > axes["gender"].auc_spread["bpsn_auc"]


def test_auc_gap_is_floored_at_zero():
    # Every subgroup ranks better than the data as a whole: the gap is 0, not negative.
    y = np.array([1, 0] * 20 + [1, 0, 0, 1] * 5)
    s = np.r_[np.tile([0.9, 0.1], 20), np.tile([0.4, 0.6, 0.5, 0.5], 5)]
    member = np.r_[np.ones(40), np.zeros(20)].reshape(-1, 1).astype(int)
    member = np.c_[member, member]
    report = bias_report(y, s, member, ("male", "female"), min_per_class=1)
    gender = report.axes[0]
    assert min(min(m.subgroup_auc, m.bpsn_auc, m.bnsp_auc) for m in report.identities) > report.overall_auc
    assert gender.auc_gap == 0.0


# --- undefined and skipped ----------------------------------------------------------------

def with_extra_identity(y, s, member, name, rows):
    column = np.zeros((y.size, 1), dtype=np.int64)
    column[rows] = 1
    return y, s, np.c_[member, column], IDENTITIES + (name,)


def test_identity_below_min_per_class_is_skipped_with_the_reason():
    y, s, member = planted(0)
    toxic, civil = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    y, s, member4, names = with_extra_identity(y, s, member, "hindu", np.r_[toxic[:3], civil[:40]])
    report = point_report(y, s, member4, names)
    hindu = by_identity(report)["hindu"]
    assert not hindu.evaluated
    assert math.isnan(hindu.subgroup_auc) and math.isnan(hindu.bnsp_auc) and math.isnan(hindu.fnr)
    reason = "only 3 toxic examples in subgroup 'hindu' (min_per_class=10)"
    assert hindu.undefined["subgroup_auc"] == hindu.undefined["bnsp_auc"] == hindu.undefined["fnr"] == reason
    assert hindu.skipped_reason == reason and report.skipped == {"hindu": reason}
    # Its BPSN AUC and FPR rest on 40 non-toxic subgroup examples: reported, and equal to sklearn's.
    g = member4[:, -1] == 1
    assert hindu.bpsn_auc == pytest.approx(ref_bpsn_auc(y, s, g), abs=TOL)
    assert hindu.fpr == pytest.approx(ref_rates(y[g], s[g])[0], abs=TOL)
    religion = by_axis(report)["religion"]
    assert "hindu" not in religion.evaluated and religion.skipped == {"hindu": reason}
    # The aggregates are those of the other identities alone.
    without = point_report(y, s, member, IDENTITIES)
    assert report.power_means == without.power_means and report.final_score == without.final_score
    assert religion.auc_spread == by_axis(without)["religion"].auc_spread


@pytest.mark.parametrize("toxic_members, evaluated", [(10, True), (9, False)])
def test_min_per_class_is_inclusive(toxic_members, evaluated):
    y, s, member = planted(3)
    toxic, civil = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    y, s, member_x, names = with_extra_identity(y, s, member, "asian", np.r_[toxic[:toxic_members], civil[:50]])
    m = by_identity(point_report(y, s, member_x, names, min_per_class=10))["asian"]
    assert m.evaluated is evaluated and math.isnan(m.subgroup_auc) is not evaluated


def test_subgroup_without_toxic_examples():
    y, s, member = planted(1)
    civil = np.flatnonzero(y == 0)
    y, s, member_x, names = with_extra_identity(y, s, member, "atheist", civil[:25])
    m = by_identity(point_report(y, s, member_x, names, min_per_class=1))["atheist"]
    reason = "no toxic examples in subgroup 'atheist' (min_per_class=1)"
    assert math.isnan(m.subgroup_auc) and math.isnan(m.bnsp_auc) and math.isnan(m.fnr)
    assert m.undefined == {"subgroup_auc": reason, "bnsp_auc": reason, "fnr": reason}
    assert not m.evaluated and m.skipped_reason == reason
    assert m.bpsn_auc == pytest.approx(ref_bpsn_auc(y, s, member_x[:, -1] == 1), abs=TOL)


def test_identity_everyone_mentions_has_no_background():
    y, s, _ = planted(0, n=200)
    m = bias_report(y, s, np.ones((y.size, 1)), ("female",), min_per_class=1).identities[0]
    assert m.subgroup_auc == pytest.approx(roc_auc_score(y, s), abs=TOL)
    assert m.undefined == {"bpsn_auc": "no toxic examples outside subgroup 'female' (min_per_class=1)",
                           "bnsp_auc": "no non-toxic examples outside subgroup 'female' (min_per_class=1)"}


def test_nothing_evaluated_leaves_aggregates_undefined_with_reasons():
    y = np.array([1, 0, 1, 0, 1, 0])
    s = np.array([0.9, 0.2, 0.8, 0.3, 0.7, 0.4])
    member = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 0]])
    report = bias_report(y, s, member, ("christian", "jewish"))  # min_per_class=10: nothing qualifies
    # Every reason an identity is skipped for, each once.
    assert report.skipped == {
        name: (f"only 1 toxic example in subgroup '{name}' (min_per_class=10); only 1 non-toxic example in "
               f"subgroup '{name}' (min_per_class=10); only 2 toxic examples outside subgroup '{name}' "
               f"(min_per_class=10); only 2 non-toxic examples outside subgroup '{name}' (min_per_class=10)")
        for name in ("christian", "jewish")}
    assert all(math.isnan(v) for v in report.power_means.values()) and math.isnan(report.final_score)
    assert math.isnan(report.overall_auc)
    too_few = "only 3 toxic examples (min_per_class=10); only 3 non-toxic examples (min_per_class=10)"
    assert report.undefined["overall_auc"] == too_few
    assert report.undefined["power_means"] == "no identity has all three bias AUCs defined (see skipped)"
    assert report.undefined["final_score"] == too_few + "; no identity has all three bias AUCs defined (see skipped)"
    christian = report.identities[0]
    assert christian.undefined["subgroup_auc"] == (
        "only 1 toxic example in subgroup 'christian' (min_per_class=10); "
        "only 1 non-toxic example in subgroup 'christian' (min_per_class=10)")
    religion = report.axes[0]
    assert religion.evaluated == () and math.isnan(religion.auc_gap) and religion.auc_gap_at is None
    assert set(religion.undefined) == {"auc_spread", "fpr_gap", "fnr_gap", "auc_gap", "fpr_equality_difference",
                                       "fnr_equality_difference", "pinned_auc_equality_difference"}


def test_report_serialises_to_strict_json():
    y, s, member = planted(0)
    y, s, member_x, names = with_extra_identity(y, s, member, "buddhist", np.flatnonzero(y == 0)[:5])
    report = bias_report(y, s, member_x, names, bootstrap=100)  # intervals serialised too, quickly
    text = report.to_json()
    data = json.loads(text)  # strict: Python's json would also accept bare NaN, so check the spelling too
    assert "NaN" not in text
    buddhist = next(m for m in data["identities"] if m["identity"] == "buddhist")
    assert buddhist["subgroup_auc"] == "nan" and buddhist["evaluated"] is False
    assert buddhist["undefined"]["subgroup_auc"] == (
        "no toxic examples in subgroup 'buddhist' (min_per_class=10); "
        "only 5 non-toxic examples in subgroup 'buddhist' (min_per_class=10)")
    assert data["skipped"] == {"buddhist": buddhist["skipped_reason"]}
    assert buddhist["intervals"]["subgroup_auc"] == ["nan", "nan"]
    assert buddhist["intervals_undefined"]["subgroup_auc"] == buddhist["undefined"]["subgroup_auc"]
    assert data["final_score"] == pytest.approx(report.final_score, abs=0)
    assert [a["axis"] for a in data["axes"]] == ["gender", "religion", "ethnicity"]
    plain = report.to_dict()
    assert math.isnan(plain["identities"][-1]["subgroup_auc"]) and plain["identities"][0]["identity"] == "male"


# --- pinned AUC (Dixon et al. 2018) -------------------------------------------------------

def rebuilt_pinned_rows(g, seed, name):
    """pinned_sample's documented recipe, written out: |subgroup| distinct rows of all the data, drawn
    without replacement; the pinned set is the subgroup's rows followed by them (a row in both, twice)."""
    sample = np.random.default_rng([seed, 0, VOCABULARY.index(name)]).choice(g.size, int(g.sum()), replace=False)
    return np.r_[np.flatnonzero(g), sample], sample


@pytest.mark.parametrize("decimals", [None, 1])
def test_pinned_auc_is_sklearn_on_the_subgroup_plus_its_sample(decimals):
    y, s, member = planted(0, decimals=decimals)
    report = point_report(y, s, member, IDENTITIES, min_per_class=1, seed=7)
    got = by_identity(report)
    for j, name in enumerate(IDENTITIES):
        g = member[:, j] == 1
        rows, sample = rebuilt_pinned_rows(g, 7, name)
        assert np.unique(sample).size == sample.size == g.sum()
        np.testing.assert_array_equal(pinned_sample(g.size, int(g.sum()), 7, name), sample)
        assert got[name].pinned_auc == pytest.approx(roc_auc_score(y[rows], s[rows]), abs=TOL)
    overall = roc_auc_score(y, s)
    for a in report.axes:
        assert a.pinned_auc_equality_difference == pytest.approx(
            sum(abs(overall - got[n].pinned_auc) for n in a.evaluated), abs=TOL)
    # An identity's sample depends on the seed and the identity alone, not on the others reported.
    alone = point_report(y, s, member[:, [IDENTITIES.index("muslim")]], ("muslim",), min_per_class=1, seed=7)
    assert alone.identities[0].pinned_auc == got["muslim"].pinned_auc
    other_seed = by_identity(point_report(y, s, member, IDENTITIES, min_per_class=1, seed=8))
    assert other_seed["muslim"].pinned_auc != got["muslim"].pinned_auc


def test_pinned_auc_undefined_without_enough_of_a_class_in_its_set():
    y, s, member = planted(1)
    civil = np.flatnonzero(y == 0)
    y, s, member_x, names = with_extra_identity(y, s, member, "atheist", civil[:4])
    atheist = by_identity(point_report(y, s, member_x, names))["atheist"]
    rows, _ = rebuilt_pinned_rows(member_x[:, -1] == 1, 0, "atheist")
    toxic_in_set = int(y[rows].sum())
    assert toxic_in_set < 10
    assert math.isnan(atheist.pinned_auc)
    assert atheist.undefined["pinned_auc"].startswith(
        f"{'no' if toxic_in_set == 0 else f'only {toxic_in_set}'} toxic example")
    assert "in the pinned set of 'atheist' (min_per_class=10)" in atheist.undefined["pinned_auc"]


# --- the weighted AUC behind the bootstrap -------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_weighted_roc_auc_is_sklearn_with_sample_weight(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.random(n) < 0.4
    s = np.round(rng.random(n), 1)  # many ties, within and across classes
    w = 3 * rng.random(n)
    assert weighted_roc_auc(s, w * y, w * ~y) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=TOL)
    # Integer weights (bootstrap counts, zeros included), several weightings at once.
    counts = rng.integers(0, 4, size=(5, n))
    got = weighted_roc_auc(s, counts * y, counts * ~y)
    assert got.shape == (5,)
    for c, auc in zip(counts, got):
        assert auc == pytest.approx(roc_auc_score(y, s, sample_weight=c), abs=TOL)
    # A count is that many copies of the row: ties between copies are counted 1/2 as any other tie.
    rows = np.repeat(np.arange(n), counts[0])
    assert got[0] == pytest.approx(roc_auc_score(y[rows], s[rows]), abs=TOL)
    assert math.isnan(weighted_roc_auc(s, w * y, 0 * w))  # no negative weight: undefined, not 0.5


# --- bootstrap intervals ------------------------------------------------------------------

def test_intervals_are_percentiles_of_sklearn_on_the_resampled_rows():
    y, s, member = planted(4, n=400, decimals=2)
    names = ("muslim", "black")
    member = member[:, [IDENTITIES.index(n) for n in names]]
    resamples, seed = 20, 3
    report = bias_report(y, s, member, names, min_per_class=1, bootstrap=resamples, seed=seed)
    # Resample r is the rows draws[r] (the documented stream of `seed`, one block here).
    draws = np.random.default_rng([seed, 1]).integers(0, y.size, size=(resamples, y.size))
    ref = {key: [] for key in ("overall_auc", "final_score")}
    for r in draws:
        yr, sr, gr = y[r], s[r], member[r] == 1
        count = np.bincount(r, minlength=y.size)
        means = []
        for j, name in enumerate(names):
            figures = {"subgroup_auc": ref_subgroup_auc(yr, sr, gr[:, j]), "bpsn_auc": ref_bpsn_auc(yr, sr, gr[:, j]),
                       "bnsp_auc": ref_bnsp_auc(yr, sr, gr[:, j])}
            # The pinned set stays the report's; each of its rows weighs what the resample drew of it.
            rows, _ = rebuilt_pinned_rows(member[:, j] == 1, seed, name)
            figures["pinned_auc"] = roc_auc_score(y[rows], s[rows], sample_weight=count[rows])
            figures["fpr"], figures["fnr"] = ref_rates(yr[gr[:, j]], sr[gr[:, j]])
            for k, v in figures.items():
                ref.setdefault((name, k), []).append(v)
            means.append([figures[k] for k in ("subgroup_auc", "bpsn_auc", "bnsp_auc")])
        power_means = [kaggle_power_mean(col, -5) for col in np.array(means).T]
        ref["overall_auc"].append(roc_auc_score(yr, sr))
        ref["final_score"].append(0.25 * ref["overall_auc"][-1] + 0.25 * sum(power_means))
        for name, m in zip(names, means):  # one identity per axis: the gap is to its worst AUC
            ref.setdefault((name, "auc_gap"), []).append(max(0.0, ref["overall_auc"][-1] - min(m)))
    quantiles = {key: tuple(np.quantile(v, [0.025, 0.975])) for key, v in ref.items()}
    assert report.intervals["overall_auc"] == pytest.approx(quantiles["overall_auc"], abs=TOL)
    assert report.intervals["final_score"] == pytest.approx(quantiles["final_score"], abs=TOL)
    for m in report.identities:
        for k in ("subgroup_auc", "bpsn_auc", "bnsp_auc", "pinned_auc", "fpr", "fnr"):
            assert m.intervals[k] == pytest.approx(quantiles[m.identity, k], abs=TOL), (m.identity, k)
    axes = by_axis(report)
    assert axes["religion"].intervals["auc_gap"] == pytest.approx(quantiles["muslim", "auc_gap"], abs=TOL)
    assert axes["ethnicity"].intervals["auc_gap"] == pytest.approx(quantiles["black", "auc_gap"], abs=TOL)
    assert report.intervals_undefined == {} and all(m.intervals_undefined == {} for m in report.identities)


def test_resampled_figures_at_unit_counts_are_the_report_s():
    """The bootstrap recomputes every figure its own (vectorized) way; with each row drawn once, that
    must give back the report's figures, skipped identities and undefined figures included."""
    y, s, member = planted(5, decimals=2)
    toxic, civil = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    y, s, member_x, names = with_extra_identity(y, s, member, "hindu", np.r_[toxic[:3], civil[:40]])
    report = point_report(y, s, member_x, names, seed=2)
    samples = [pinned_sample(y.size, int(member_x[:, j].sum()), 2, name) for j, name in enumerate(names)]
    got = _ResampledFigures(report, y == 1, s, member_x == 1, s >= 0.5, samples)(np.ones((y.size, 1)))
    expected = {("report", "", k): v for k, v in
                [("overall_auc", report.overall_auc), ("overall_fpr", report.overall_fpr),
                 ("overall_fnr", report.overall_fnr), ("final_score", report.final_score)]
                + [(f"power_means.{k}", v) for k, v in report.power_means.items()]}
    for m in report.identities:
        expected.update({("identity", m.identity, k): getattr(m, k)
                         for k in ("subgroup_auc", "bpsn_auc", "bnsp_auc", "pinned_auc", "fpr", "fnr")})
    for a in report.axes:
        expected.update({("axis", a.axis, f"auc_spread.{k}"): v for k, v in a.auc_spread.items()})
        expected.update({("axis", a.axis, k): getattr(a, k) for k in (
            "auc_gap", "fpr_gap", "fnr_gap", "fpr_equality_difference", "fnr_equality_difference",
            "pinned_auc_equality_difference")})
    defined = {key: v for key, v in expected.items() if not math.isnan(v)}
    assert ("identity", "hindu", "bpsn_auc") in defined and ("identity", "hindu", "subgroup_auc") not in defined
    assert set(got) == set(defined)
    for key, v in defined.items():
        assert got[key].shape == (1,) and got[key][0] == pytest.approx(v, abs=TOL), key


def test_intervals_contain_the_figure_and_narrow_as_n_grows():
    width = {}
    for n in (400, 4000):
        y, s, member = planted(6, n=n)
        report = bias_report(y, s, member, IDENTITIES, min_per_class=1, bootstrap=200)
        figures = {"overall_auc": report.overall_auc, "final_score": report.final_score}
        figures.update({(m.identity, k): getattr(m, k) for m in report.identities
                        for k in ("subgroup_auc", "bpsn_auc", "bnsp_auc", "pinned_auc")})
        intervals = {"overall_auc": report.intervals["overall_auc"], "final_score": report.intervals["final_score"]}
        intervals.update({(m.identity, k): m.intervals[k] for m in report.identities
                          for k in ("subgroup_auc", "bpsn_auc", "bnsp_auc", "pinned_auc")})
        for key, (low, high) in intervals.items():
            assert low <= figures[key] <= high, (n, key)
        width[n] = {key: high - low for key, (low, high) in intervals.items()}
    # Ten times the data: about a third of the width (1/sqrt(10)). An identity's ~50 examples at n=400
    # can put its AUC near 1 by chance, squeezing that one interval, so per identity figure the typical
    # (median) ratio is checked; the whole-data figures each.
    for key in ("overall_auc", "final_score"):
        assert width[4000][key] < 0.5 * width[400][key], key
    ratios = [width[4000][key] / width[400][key] for key in width[400] if isinstance(key, tuple)]
    assert np.median(ratios) < 0.5, ratios


def test_intervals_are_deterministic_given_the_seed():
    y, s, member = planted(7, n=600)
    first = bias_report(y, s, member, IDENTITIES, min_per_class=1, bootstrap=100, seed=11)
    again = bias_report(y, s, member, IDENTITIES, min_per_class=1, bootstrap=100, seed=11)
    assert first.to_json() == again.to_json()
    other = bias_report(y, s, member, IDENTITIES, min_per_class=1, bootstrap=100, seed=12)
    assert other.intervals["overall_auc"] != first.intervals["overall_auc"]
    assert other.overall_auc == first.overall_auc  # the seed moves intervals and pinned AUCs only


def test_too_few_examples_give_undefined_intervals_with_the_reason():
    y, s, member = planted(0)
    toxic, civil = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    extra = np.zeros((y.size, 2), dtype=np.int64)
    extra[np.r_[toxic[:3], civil[:40]], 0] = 1  # hindu: too few toxic examples for its own figures
    extra[np.r_[toxic[-10:], civil[-60:]], 1] = 1  # asian: exactly min_per_class toxic ones
    names = IDENTITIES + ("hindu", "asian")
    report = bias_report(y, s, np.c_[member, extra], names, bootstrap=200)
    got = by_identity(report)
    # A figure that is itself undefined has no interval, for the figure's own reason.
    hindu = got["hindu"]
    assert all(math.isnan(x) for x in hindu.intervals["subgroup_auc"])
    assert hindu.intervals_undefined["subgroup_auc"] == hindu.undefined["subgroup_auc"]
    low, high = hindu.intervals["bpsn_auc"]  # on 40 non-toxic subgroup examples: defined
    assert low <= hindu.bpsn_auc <= high and "bpsn_auc" not in hindu.intervals_undefined
    # Defined on the data, but about half the resamples draw fewer than 10 of its toxic examples: an
    # interval from the other half would describe only the lucky draws, so there is none.
    asian = got["asian"]
    assert asian.evaluated and not math.isnan(asian.subgroup_auc)
    assert all(math.isnan(x) for x in asian.intervals["subgroup_auc"])
    reason = asian.intervals_undefined["subgroup_auc"]
    k = int(reason.split()[2])
    assert k > MAX_UNDEFINED_RESAMPLES * 200
    assert reason == (f"undefined in {k} of 200 bootstrap resamples, more than the 5% allowed: they drew "
                      "fewer than min_per_class=10 examples of a class for a comparison it rests on")
    assert "fpr" not in asian.intervals_undefined  # 60 non-toxic examples: the FPR is fine
    # asian is in the aggregates, so they are undefined in those resamples too; gender is untouched.
    assert report.intervals_undefined["power_means.subgroup_auc"].startswith("undefined in ")
    assert report.intervals_undefined["final_score"].startswith("undefined in ")
    assert by_axis(report)["ethnicity"].intervals_undefined["auc_gap"].startswith("undefined in ")
    assert by_axis(report)["gender"].intervals_undefined == {}
    data = json.loads(report.to_json())
    hindu_json = next(m for m in data["identities"] if m["identity"] == "hindu")
    assert hindu_json["intervals"]["subgroup_auc"] == ["nan", "nan"]
    assert hindu_json["intervals_undefined"]["subgroup_auc"] == hindu.undefined["subgroup_auc"]


def _without_intervals(x):
    if isinstance(x, dict):
        return {k: _without_intervals(v) for k, v in x.items()
                if k not in ("intervals", "intervals_undefined", "bootstrap")}
    if isinstance(x, list):
        return [_without_intervals(v) for v in x]
    return x


def test_default_call_adds_intervals_and_leaves_the_figures_alone():
    """experiments/fairness_eval.py calls bias_report(labels, scores, membership, names).to_dict(): the
    default keeps every field it had and adds intervals, fast on an evaluation set of the size issue 12
    names (4,080 examples, 16 identities, 1,000 resamples)."""
    rng = np.random.default_rng(8)
    n, names = 4080, VOCABULARY[:16]
    y = (rng.random(n) < 0.3).astype(np.int64)
    member = (rng.random((n, len(names))) < 0.08).astype(np.int64)
    s = 1.0 / (1.0 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(size=n))))
    start = time.perf_counter()
    full = bias_report(y, s, member, names)
    elapsed = time.perf_counter() - start
    # A loop over resamples takes minutes here; the vectorized bootstrap about a second.
    assert elapsed < 20, elapsed
    assert (full.bootstrap, full.confidence, full.seed) == (1000, 0.95, 0)
    data = json.loads(full.to_json())
    assert _without_intervals(data) == _without_intervals(json.loads(point_report(y, s, member, names).to_json()))
    old_fields = {"n_examples", "n_positives", "n_negatives", "threshold", "min_per_class", "power",
                  "overall_weight", "overall_auc", "overall_fpr", "overall_fnr", "power_means", "final_score",
                  "identities", "axes", "skipped", "undefined"}
    assert old_fields <= set(full.to_dict())
    assert set(data["intervals"]) == {"overall_auc", "overall_fpr", "overall_fnr", "power_means.subgroup_auc",
                                      "power_means.bpsn_auc", "power_means.bnsp_auc", "final_score"}
    for m in data["identities"]:
        assert set(m["intervals"]) == {"subgroup_auc", "bpsn_auc", "bnsp_auc", "pinned_auc", "fpr", "fnr"}
        assert all(len(pair) == 2 for pair in m["intervals"].values())
    for a in data["axes"]:
        assert {"auc_gap", "fpr_gap", "fnr_gap", "pinned_auc_equality_difference"} <= set(a["intervals"])
    assert full.intervals["overall_auc"][0] <= full.overall_auc <= full.intervals["overall_auc"][1]


# --- bad input: one sentence each --------------------------------------------------------

def _ok():
    y, s, member = hand_example()
    return dict(labels=y, scores=s, membership=member, identities=("muslim",))


@pytest.mark.parametrize("change, message", [
    (dict(scores=np.full(7, 0.5)), r"scores have shape \(7,\) but labels have 8 entries; pass one score per example\."),
    (dict(membership=np.zeros((7, 1))), r"membership has shape \(7, 1\), expected \(8, 1\): one row per example"),
    (dict(membership=np.zeros((8, 2))), r"membership has shape \(8, 2\), expected \(8, 1\)"),
    (dict(labels=np.array([1, 0, 0.7, 0, 1, 1, 0, 0])), r"labels must be 0 or 1, found 0\.7 at index 2; "
                                                         r"binarize fractional toxicity with label >= 0\.5 first\."),
    (dict(labels=np.array([1, 0, 2, 0, 1, 1, 0, 0])), r"labels must be 0 or 1, found 2\.0 at index 2"),
    (dict(labels=np.zeros((8, 1))), r"labels must be a non-empty 1-D array, got shape \(8, 1\)\."),
    (dict(labels=np.array([]), scores=np.array([]), membership=np.zeros((0, 1))), "labels must be a non-empty"),
    (dict(labels=["a"] * 8), "labels, scores and membership must be numeric arrays"),
    (dict(scores=np.array([0.6, 0.9, 0.7, 1.5, 0.8, 0.5, 0.3, 0.1])),
     r"scores must be probabilities in \[0, 1\], found 1\.5 at index 3; pass the sigmoid"),
    (dict(scores=np.array([0.6, np.nan, 0.7, 0.5, 0.8, 0.5, 0.3, 0.1])), r"found nan at index 1"),
    (dict(membership=np.array([[1], [1], [0.5], [1], [0], [0], [0], [0]])),
     r"membership must be 0 or 1, found 0\.5 at row 2, column 0; binarize fractional identity labels with >= 0\.5"),
    (dict(identities=("muslims",), ), r"unknown identity 'muslims'; did you mean 'muslim'\?"),
    (dict(identities=(), membership=np.zeros((8, 0))), "no identities given"),
    (dict(min_per_class=0), r"min_per_class must be an integer >= 1, got 0\."),
    (dict(min_per_class=2.5), r"min_per_class must be an integer >= 1, got 2\.5\."),
    (dict(min_per_class=True), r"min_per_class must be an integer >= 1, got True\."),
    (dict(threshold=1.5), r"threshold must be a probability in \[0, 1\], got 1\.5\."),
    (dict(overall_weight=-0.1), r"overall_weight must be in \[0, 1\], got -0\.1\."),
    (dict(power=float("inf")), r"power must be a finite number, got inf\."),
    (dict(seed=-1), r"seed must be an integer >= 0, got -1\."),
    (dict(seed=1.5), r"seed must be an integer >= 0, got 1\.5\."),
    (dict(bootstrap=-5), r"bootstrap must be an integer >= 0 \(resamples; 0 for no intervals\), got -5\."),
    (dict(bootstrap=True), r"bootstrap must be an integer >= 0 \(resamples; 0 for no intervals\), got True\."),
    (dict(confidence=1.0), r"confidence must be in \(0, 1\), got 1\.0\."),
    (dict(confidence=0), r"confidence must be in \(0, 1\), got 0\."),
])
def test_bad_input_gets_one_sentence(change, message):
    kwargs = {**_ok(), **change}
    with pytest.raises(HoloError, match=message) as e:
        bias_report(**kwargs)
    text = str(e.value)
    assert "\n" not in text and text[-1] in ".?" and text.count(". ") == 0
