"""Bias metrics (Borkan et al. 2019) against independent computations: scikit-learn's roc_auc_score and
confusion_matrix on subsets built the way the Jigsaw competition's benchmark kernel builds them, a
hand-computed example, and the power mean's formula. Host-only numpy; nothing here compiles."""
import json
import math

import numpy as np
import pytest
from scipy.stats import pmean
from sklearn.metrics import confusion_matrix, roc_auc_score

from holo_jax.errors import HoloError
from holo_jax.fairness import AXIS_OF, bias_report, generalized_mean, jigsaw_final_score

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


def by_identity(report):
    return {m.identity: m for m in report.identities}


def by_axis(report):
    return {a.axis: a for a in report.axes}


# --- every figure against scikit-learn ------------------------------------------------------

@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("seed", range(3))
def test_every_figure_matches_sklearn(seed, decimals):
    y, s, member = planted(seed, decimals=decimals)
    report = bias_report(y, s, member, IDENTITIES, min_per_class=1)
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
    got = by_identity(bias_report(y, s, member, IDENTITIES))
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
    report = bias_report(y, s, member, IDENTITIES)
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
    report = bias_report(y, s, member, IDENTITIES)
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
    report = bias_report(y, s, member4, names)
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
    without = bias_report(y, s, member, IDENTITIES)
    assert report.power_means == without.power_means and report.final_score == without.final_score
    assert religion.auc_spread == by_axis(without)["religion"].auc_spread


@pytest.mark.parametrize("toxic_members, evaluated", [(10, True), (9, False)])
def test_min_per_class_is_inclusive(toxic_members, evaluated):
    y, s, member = planted(3)
    toxic, civil = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    y, s, member_x, names = with_extra_identity(y, s, member, "asian", np.r_[toxic[:toxic_members], civil[:50]])
    m = by_identity(bias_report(y, s, member_x, names, min_per_class=10))["asian"]
    assert m.evaluated is evaluated and math.isnan(m.subgroup_auc) is not evaluated


def test_subgroup_without_toxic_examples():
    y, s, member = planted(1)
    civil = np.flatnonzero(y == 0)
    y, s, member_x, names = with_extra_identity(y, s, member, "atheist", civil[:25])
    m = by_identity(bias_report(y, s, member_x, names, min_per_class=1))["atheist"]
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
    assert set(religion.undefined) == {"auc_spread", "fpr_gap", "fnr_gap", "auc_gap",
                                       "fpr_equality_difference", "fnr_equality_difference"}


def test_report_serialises_to_strict_json():
    y, s, member = planted(0)
    y, s, member_x, names = with_extra_identity(y, s, member, "buddhist", np.flatnonzero(y == 0)[:5])
    report = bias_report(y, s, member_x, names)
    text = report.to_json()
    data = json.loads(text)  # strict: Python's json would also accept bare NaN, so check the spelling too
    assert "NaN" not in text
    buddhist = next(m for m in data["identities"] if m["identity"] == "buddhist")
    assert buddhist["subgroup_auc"] == "nan" and buddhist["evaluated"] is False
    assert buddhist["undefined"]["subgroup_auc"] == (
        "no toxic examples in subgroup 'buddhist' (min_per_class=10); "
        "only 5 non-toxic examples in subgroup 'buddhist' (min_per_class=10)")
    assert data["skipped"] == {"buddhist": buddhist["skipped_reason"]}
    assert data["final_score"] == pytest.approx(report.final_score, abs=0)
    assert [a["axis"] for a in data["axes"]] == ["gender", "religion", "ethnicity"]
    plain = report.to_dict()
    assert math.isnan(plain["identities"][-1]["subgroup_auc"]) and plain["identities"][0]["identity"] == "male"


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
])
def test_bad_input_gets_one_sentence(change, message):
    kwargs = {**_ok(), **change}
    with pytest.raises(HoloError, match=message) as e:
        bias_report(**kwargs)
    text = str(e.value)
    assert "\n" not in text and text[-1] in ".?" and text.count(". ") == 0
