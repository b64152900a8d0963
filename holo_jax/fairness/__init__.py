"""Fairness: the Civil Comments identity vocabulary and the unintended-bias metrics of Borkan et al.
2019 (subgroup, BPSN and BNSP AUC, the Jigsaw final score, per-axis gaps), Dixon et al. 2018's pinned
AUC, and bootstrap intervals of every figure, computed on the host;
the adversarial debiasing stage of Zhang et al. 2018 (`adversary`) and the MinDiff MMD penalty of
Prost et al. 2019 (`mindiff`), which run inside the step. Importing this package registers the
stage kinds `adversarial_debias` and `mindiff` (`--set stages=...`).

`train/` must not import this package (docs/DESIGN.md section 3); `experiments/` wires it in."""
from holo_jax.fairness.identities import (
    AXES, AXIS_OF, IDENTITIES, MEMBERSHIP_THRESHOLD, TOXIC_THRESHOLD, axes_of,
)
from holo_jax.fairness.adversary import AdversarialDebias, AdversarialDebiasConfig, zhang_update
from holo_jax.fairness.mindiff import MinDiff, MinDiffConfig, mmd_squared
from holo_jax.fairness.metrics import (
    BIAS_METRICS, BOOTSTRAP, CONFIDENCE, MIN_PER_CLASS, OVERALL_WEIGHT, POWER, AxisMetrics, BiasReport,
    IdentityMetrics, bias_report, bnsp_auc, bpsn_auc, generalized_mean, jigsaw_final_score, pinned_auc,
    pinned_sample, subgroup_auc, weighted_roc_auc,
)

__all__ = [
    "AdversarialDebias", "AdversarialDebiasConfig", "zhang_update",
    "MinDiff", "MinDiffConfig", "mmd_squared",
    "AXES", "AXIS_OF", "AxisMetrics", "BIAS_METRICS", "BOOTSTRAP", "BiasReport", "CONFIDENCE", "IDENTITIES",
    "IdentityMetrics", "MEMBERSHIP_THRESHOLD", "MIN_PER_CLASS", "OVERALL_WEIGHT", "POWER", "TOXIC_THRESHOLD",
    "axes_of", "bias_report", "bnsp_auc", "bpsn_auc", "generalized_mean", "jigsaw_final_score", "pinned_auc",
    "pinned_sample", "subgroup_auc", "weighted_roc_auc",
]
