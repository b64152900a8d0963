"""Debiased models against their baseline, from bias reports (`BiasReport.to_dict()`): per axis the
AUC gap of each, its reduction, and the change in overall AUC; then the same over seeds, with a
verdict against a stated target (by default issue 12's: every named axis's gap reduced by at least
60% with overall AUC lower by at most 0.01, on every seed).

Host-side arithmetic on plain dicts, so a report written by one version can be compared by another.
A reduction is undefined (None, with the reason) where the baseline has no gap to reduce: a ratio
of two noise-level numbers is not evidence either way."""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Mapping, Sequence

# Gaps at or below this are "no gap" for the purpose of a reduction ratio: about the rounding of a
# 240-example subgroup's AUC (1 / (120 * 120) per pair is far smaller; one reordered pair in a
# hundred is 0.01). Reported, not hidden: the gap itself is always in the table.
MIN_BASELINE_GAP = 0.005


@dataclasses.dataclass(frozen=True)
class Target:
    """What "debiasing worked" means for a verdict."""

    axes: tuple[str, ...] = ("gender", "ethnicity", "religion")
    min_reduction: float = 0.6  # (baseline gap - gap) / baseline gap, on each axis
    max_auc_drop: float = 0.01  # baseline overall AUC - overall AUC

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def axis_gaps(report: Mapping[str, Any]) -> dict[str, float | None]:
    """axis -> AUC gap (None where the report could not compute it)."""
    return {a["axis"]: _finite(a.get("auc_gap")) for a in report.get("axes", [])}


def reduction(baseline_gap: float | None, gap: float | None) -> tuple[float | None, str | None]:
    """((baseline - gap) / baseline, None) or (None, why it is undefined)."""
    if baseline_gap is None or gap is None:
        return None, "a gap is undefined (too few examples of this axis)"
    if baseline_gap <= MIN_BASELINE_GAP:
        return None, f"the baseline gap {baseline_gap:.4f} is at most {MIN_BASELINE_GAP}: nothing to reduce"
    return (baseline_gap - gap) / baseline_gap, None


def compare(baseline: Mapping[str, Any], treated: Mapping[str, Any]) -> dict[str, Any]:
    """One seed, one method, one evaluation set: per axis baseline gap, gap, reduction; overall AUCs."""
    base_gaps, gaps = axis_gaps(baseline), axis_gaps(treated)
    axes = {}
    for axis in base_gaps:
        value, why = reduction(base_gaps[axis], gaps.get(axis))
        axes[axis] = {"baseline_gap": base_gaps[axis], "gap": gaps.get(axis), "reduction": value,
                      **({"reduction_undefined": why} if why else {})}
    base_auc, auc = _finite(baseline.get("overall_auc")), _finite(treated.get("overall_auc"))
    drop = None if base_auc is None or auc is None else base_auc - auc
    return {"axes": axes, "baseline_auc": base_auc, "auc": auc, "auc_drop": drop}


def verdict(comparisons: Sequence[Mapping[str, Any]], target: Target = Target()) -> dict[str, Any]:
    """Over seeds (one `compare` result each): per target axis the reductions, their minimum and
    mean; the AUC drops; and `met` (every seed meets every part), with the failing parts named."""
    failures: list[str] = []
    axes = {}
    for axis in target.axes:
        values = [c["axes"].get(axis, {}).get("reduction") for c in comparisons]
        defined = [v for v in values if v is not None]
        axes[axis] = {"reductions": values, "min": min(defined) if defined else None,
                      "mean": statistics.fmean(defined) if defined else None}
        for seed, v in enumerate(values):
            if v is None:
                failures.append(f"seed {seed}: the {axis} reduction is undefined")
            elif v < target.min_reduction:
                failures.append(f"seed {seed}: {axis} gap reduced by {v:.0%} < {target.min_reduction:.0%}")
    drops = [c.get("auc_drop") for c in comparisons]
    for seed, d in enumerate(drops):
        if d is None:
            failures.append(f"seed {seed}: overall AUC is undefined")
        elif d > target.max_auc_drop:
            failures.append(f"seed {seed}: overall AUC lower by {d:.4f} > {target.max_auc_drop}")
    return {"target": target.to_dict(), "axes": axes, "auc_drops": drops, "met": not failures,
            "failures": failures}


__all__ = ["MIN_BASELINE_GAP", "Target", "axis_gaps", "compare", "reduction", "verdict"]
