"""Debiased against baseline (holo_jax.fairness.comparison): reductions, undefined ratios, and the
verdict over seeds, on hand-made report dicts whose answers are worked out here."""
import pytest

from holo_jax.fairness.comparison import MIN_BASELINE_GAP, Target, compare, reduction, verdict


def _report(auc, **gaps):
    return {"overall_auc": auc, "axes": [{"axis": a, "auc_gap": g} for a, g in gaps.items()]}


def test_reduction_is_the_fraction_of_the_baseline_gap_closed():
    assert reduction(0.2, 0.05) == (pytest.approx(0.75), None)
    assert reduction(0.1, 0.15)[0] == pytest.approx(-0.5)  # a wider gap is a negative reduction
    value, why = reduction(MIN_BASELINE_GAP / 2, 0.0)
    assert value is None and "nothing to reduce" in why
    value, why = reduction(None, 0.1)
    assert value is None and "undefined" in why


def test_compare_pairs_axes_and_auc():
    c = compare(_report(0.90, gender=0.10, religion=0.20, ethnicity=float("nan")),
                _report(0.895, gender=0.03, religion=0.10, ethnicity=0.01))
    assert c["axes"]["gender"]["reduction"] == pytest.approx(0.7)
    assert c["axes"]["religion"]["reduction"] == pytest.approx(0.5)
    assert c["axes"]["ethnicity"]["reduction"] is None and "reduction_undefined" in c["axes"]["ethnicity"]
    assert c["auc_drop"] == pytest.approx(0.005)


def test_verdict_needs_every_axis_on_every_seed():
    target = Target(axes=("gender", "religion"), min_reduction=0.6, max_auc_drop=0.01)
    good = compare(_report(0.9, gender=0.1, religion=0.2), _report(0.895, gender=0.02, religion=0.05))
    assert verdict([good, good], target)["met"]
    weak = compare(_report(0.9, gender=0.1, religion=0.2), _report(0.9, gender=0.02, religion=0.1))
    v = verdict([good, weak], target)
    assert not v["met"] and v["failures"] == ["seed 1: religion gap reduced by 50% < 60%"]
    assert v["axes"]["religion"]["min"] == pytest.approx(0.5)
    costly = compare(_report(0.9, gender=0.1, religion=0.2), _report(0.88, gender=0.0, religion=0.0))
    v = verdict([costly], target)
    assert not v["met"] and v["failures"] == ["seed 0: overall AUC lower by 0.0200 > 0.01"]
    flat = compare(_report(0.9, gender=0.001, religion=0.2), _report(0.9, gender=0.0, religion=0.0))
    v = verdict([flat], target)
    assert not v["met"] and v["failures"] == ["seed 0: the gender reduction is undefined"]
