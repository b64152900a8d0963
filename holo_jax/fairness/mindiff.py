"""MinDiff inside the train step: a kernel MMD penalty between two groups' predicted probabilities.

Prost, Qian, Chen, Chi & Beutel 2019, "Toward a better trade-off between performance and fairness
with kernel-based distribution matching" (arXiv:1910.11779), the MinDiff paper: to close the gap in
false-positive rates between examples that mention an identity and examples that do not, add to the
task's loss `weight x MMD^2` between the distributions of the model's scores on the two groups, both
restricted to true negatives (label 0). MMD (Gretton et al. 2007) with a characteristic kernel is
zero exactly when the two distributions are the same, so unlike a difference of means or of FPRs at
one threshold it asks for the same score *distribution*, which is what every threshold's FPR (and
the BPSN AUC of Borkan et al. 2019) depends on.

The estimator follows the TensorFlow Model Remediation implementation
(`tensorflow_model_remediation/min_diff/losses/mmd_loss.py`, `MMDLoss`, default Gaussian kernel
`exp(-(x - y)^2 / l^2)` with `kernel_length` l = 0.1, or `LaplacianKernel` `exp(-|x - y| / l)`):
the biased (V-statistic) form over every pair of one batch, diagonal included,

    MMD^2 = E[k(a, a')] + E[k(b, b')] - 2 E[k(a, b)]

taken on sigmoid(log-odds), the probability of label 1 (TF's Civil Comments example passes the
model's logits through `predictions_transform=tf.sigmoid`), and not square-rooted (TF: the
derivative of sqrt blows up near 0). Group a: rows of label `on_label` that mention any of
`identities`; group b: rows of that label that mention none of them.

What this stage does differently from TF's `MinDiffModel`:
- TF draws the two groups from separate, resampled MinDiff datasets, so each batch holds both; here
  they are the training batch's own rows, so a batch (or microbatch) may lack one group. Then the
  estimate is 0 with a zero gradient (nothing to compare), not TF's `divide_no_nan` leftovers
  (which would give E[k(b, b')] alone);
- the (sum, count) rule of holo_jax.train.stats. MMD^2 is not a mean over rows, and a pairwise sum
  over the global batch cannot be split over microbatches and replicas (the cross pairs are never
  in one place). So the term is the per-batch estimate TF computes, taken per *unit* the step
  traces the loss on — one microbatch; under `grad_comm=fp32` a microbatch spans every replica (the
  compiler reduces the pairwise sums across devices), under a quantized scheme it is one replica's
  share — and combined as the row-weighted mean of the units' estimates:
      term sum = weight x n_u x MMD^2_u,  count = n (rows of label `on_label`, over the global batch).
  The count depends on the batch only, as the step requires, and with one unit (microbatches=1,
  fp32) the term is exactly `weight x MMD^2` of the global batch. With M units it is the mean of M
  smaller-batch V-statistics, which are biased upwards by O(1/n_u) (the diagonal), so the figure
  depends on `microbatches` and on the scheme: a stated exception to "a figure does not depend on
  the microbatch count", which the exact `identity_mean`/`other_mean` metrics do not share;
- why not random Fourier features, whose means do add up exactly: with phi the RFF map of the
  kernel, MMD^2 ~ ||mean_a phi - mean_b phi||^2 is a *non-linear* function of global means. The step
  differentiates each microbatch's sum / global count and adds the gradients, which is right only
  for objectives linear in per-row sums. The exact gradient, sum_d g_d grad(mean_a phi_d - mean_b
  phi_d) with g = 2 (mean_a phi - mean_b phi) of the global batch, needs either g before the
  backward pass (another forward pass over the global batch) or one requested term gradient per
  feature (D extra pull-backs of the whole model); linearising at the previous step's g would make
  the gradient that of another batch's discrepancy. The pairwise per-unit estimate is TF's own and
  costs one [n_u, n_u] kernel matrix of scalars.
Binary classification only, as MinDiff and the adversary (holo_jax.fairness.adversary).
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

import jax
import jax.numpy as jnp

from holo_jax.config import NON_EMPTY, Above, AtLeast, InRange, StageConfig
from holo_jax.errors import HoloError
from holo_jax.fairness.adversary import binary_logits
from holo_jax.train.stages import Stage, register_stage
from holo_jax.train.stats import Stat, safe_divide

PyTree = Any
TERM = "mindiff"


@dataclasses.dataclass(frozen=True)
class MinDiffConfig(StageConfig):
    """`--set stages=mindiff --set stages.mindiff.identities=muslim,jewish --set stages.mindiff.weight=1.5`."""

    kind = "mindiff"
    # The MinDiff loss weight; 1.5 is TF Model Remediation's Civil Comments tutorial value. 0 keeps
    # the metrics (a monitor) and leaves training exactly as without the stage.
    weight: Annotated[float, AtLeast(0.0)] = 1.5
    kernel: Literal["gaussian", "laplacian"] = "gaussian"
    # The kernel length on probabilities in [0, 1]; 0.1 is TF's GaussianKernel/LaplacianKernel
    # default (TF's advice: about the standard deviation of the predictions).
    bandwidth: Annotated[float, Above(0.0)] = 0.1
    # Group a mentions any of these (a subset of task.identities, any order); empty: all of them.
    identities: tuple[Annotated[str, NON_EMPTY], ...] = ()
    # Compare the groups among rows of this label: 0 (non-toxic) closes false-positive gaps, as
    # MinDiff does; 1 would close false-negative gaps.
    on_label: Annotated[int, InRange(0, 1, hi_closed=True)] = 0
    emit_every: Annotated[int, AtLeast(0)] = 0

    def check_relations(self, at: str) -> None:
        repeated = sorted({i for i in self.identities if self.identities.count(i) > 1})
        if repeated:
            raise HoloError(f"{at}.identities names {', '.join(repeated)} more than once; list each identity once.")


# ----------------------------------------------------------------------------------------
# The estimator


def kernel_matrix(x_n: jax.Array, y_m: jax.Array, kernel: str, bandwidth: float) -> jax.Array:
    """[n, m] kernel values between scalar predictions, TF Model Remediation's two kernels."""
    d_nm = x_n[:, None] - y_m[None, :]
    if kernel == "gaussian":
        return jnp.exp(-jnp.square(d_nm) / (bandwidth * bandwidth))
    if kernel == "laplacian":
        # |d| is not differentiable at 0, but on the diagonal d = p_i - p_i, whose derivative is 0
        # whatever sign(0) JAX picks; off the diagonal a tie is measure-zero.
        return jnp.exp(-jnp.abs(d_nm) / bandwidth)
    raise ValueError(f"unknown kernel {kernel!r}")


def mmd_squared(p_n: jax.Array, in_a_n: jax.Array, in_b_n: jax.Array, kernel: str = "gaussian",
                bandwidth: float = 0.1) -> jax.Array:
    """The V-statistic MMD^2 between the predictions `p_n` of rows in group a and in group b
    (float masks; rows in neither are ignored); 0 when either group is empty.

    As one quadratic form v^T K v with v = in_a / n_a - in_b / n_b, which expands to TF's
    E[k(a, a')] + E[k(b, b')] - 2 E[k(a, b)] while building one [n, n] matrix instead of three
    masked products."""
    p_n = p_n.astype(jnp.float32)
    in_a_n, in_b_n = in_a_n.astype(jnp.float32), in_b_n.astype(jnp.float32)
    n_a, n_b = in_a_n.sum(), in_b_n.sum()
    both = (n_a > 0) & (n_b > 0)
    v_n = jnp.where(both, safe_divide(in_a_n, n_a) - safe_divide(in_b_n, n_b), 0.0)
    return v_n @ kernel_matrix(p_n, p_n, kernel, bandwidth) @ v_n


class MinDiff(Stage):
    """The stage (holo_jax.train.stages contract). Term `mindiff`: `weight x MMD^2` (see the module
    docstring for how it is summed); the model is differentiated through it by the step's ordinary
    pull-back of the total, so the stage asks for no term gradient and has no state.

    Metrics: `mmd` (the MMD^2 estimate, unweighted), `loss` (weight x mmd, the term), `identity_rows`
    and `other_rows` (the two groups' sizes over the global batch), `identity_mean` and
    `other_mean` (each group's mean predicted probability, exact over the global batch: the first
    moment whose gap MinDiff should close)."""

    def __init__(self, cfg: MinDiffConfig = MinDiffConfig()):
        self.cfg, self.name, self.emit_every = cfg, cfg.stage_name, cfg.emit_every
        self.identities = tuple(cfg.identities)
        # Which of the batch's identity columns form group a; set by `bind_task` (or `for_columns`).
        self.columns: tuple[str, ...] = ()

    def for_columns(self, columns) -> "MinDiff":
        """The same stage for a batch whose identity columns are `columns` (`task.identities`)."""
        self.bind_task(_Columns(tuple(columns)))
        return self

    def bind_task(self, task) -> None:
        """The batch's identity columns come from the task; `identities` picks a subset of them
        (all when empty). Only a binary sequence classifier has the probability MinDiff compares."""
        if getattr(task, "name", None) != "sequence_classification" or getattr(task, "num_classes", 0) != 2:
            raise HoloError(f"stage `{self.name}` ({self.cfg.kind}) compares a binary classifier's scores: set "
                            f"task.kind=sequence_classification and task.num_classes=2.")
        columns = tuple(task.identities)
        unknown = [i for i in self.identities if i not in columns]
        if unknown:
            raise HoloError(f"{self.cfg.section_key()}.identities names {', '.join(unknown)}, which the task's "
                            f"batches do not carry (task.identities: {', '.join(columns) or 'none'}); name a "
                            f"subset of task.identities or leave it empty for all of them.")
        if not columns:
            raise HoloError(f"stage `{self.name}` has no identity group to compare: set task.identities to the "
                            f"identity columns of the data.")
        self.columns = columns
        self.identities = self.identities or columns

    # -- hooks ------------------------------------------------------------------------

    def _groups(self, batch, outputs):
        """(probability of label 1 [b], group a mask [b], group b mask [b]), shapes checked at trace time."""
        logits_bc = binary_logits(outputs, f"stage `{self.name}` compares a binary classifier's scores")
        if not self.columns:
            raise HoloError(f"stage `{self.name}` was not bound to a task: build it with build_stages(configs, "
                            f"task) or call for_columns(task.identities).")
        got = batch["identities"].shape[-1] if "identities" in batch else 0
        if got != len(self.columns):
            raise HoloError(f"stage `{self.name}` expects {len(self.columns)} identity columns "
                            f"({', '.join(self.columns)}) but the batch carries {got}; set task.identities to "
                            f"the data's identity columns.")
        # sigmoid(l1 - l0) is softmax(logits)[1]: the score MinDiff's TF example feeds its MMDLoss.
        p_b = jax.nn.sigmoid((logits_bc[:, 1] - logits_bc[:, 0]).astype(jnp.float32))
        picked = jnp.asarray([self.columns.index(i) for i in self.identities], jnp.int32)
        mentions_b = (batch["identities"][:, picked] > 0).any(axis=-1)
        on_label_b = batch["label"] == self.cfg.on_label
        return p_b, (on_label_b & mentions_b).astype(jnp.float32), (on_label_b & ~mentions_b).astype(jnp.float32)

    def loss(self, params, stage_state, batch, outputs, key):
        p_b, in_a_b, in_b_b = self._groups(batch, outputs)
        rows = in_a_b.sum() + in_b_b.sum()  # this unit's rows of label on_label
        # n_u x MMD^2_u: adds over units; the step divides by the global count of such rows.
        weighted = rows * mmd_squared(p_b, in_a_b, in_b_b, self.cfg.kernel, self.cfg.bandwidth)
        terms = {TERM: Stat(jnp.float32(self.cfg.weight) * weighted, rows)}
        p_b = jax.lax.stop_gradient(p_b)
        stats = {"mmd": Stat(jax.lax.stop_gradient(weighted), rows),
                 "identity": Stat((p_b * in_a_b).sum(), in_a_b.sum()),
                 "other": Stat((p_b * in_b_b).sum(), in_b_b.sum())}
        return terms, stats

    def metrics(self, stage_state, stats):
        mmd = safe_divide(stats["mmd"].sum, stats["mmd"].count)
        return {"mmd": mmd, "loss": jnp.float32(self.cfg.weight) * mmd,
                "identity_rows": stats["identity"].count, "other_rows": stats["other"].count,
                "identity_mean": safe_divide(stats["identity"].sum, stats["identity"].count),
                "other_mean": safe_divide(stats["other"].sum, stats["other"].count)}

    def emit(self, stage_state, stats):
        return {"mmd_sum": stats["mmd"].sum, "rows": stats["mmd"].count,
                "identity_rows": stats["identity"].count, "other_rows": stats["other"].count}


@dataclasses.dataclass(frozen=True)
class _Columns:
    """The part of a task `bind_task` reads, for `MinDiff.for_columns`."""

    identities: tuple[str, ...]
    name: str = "sequence_classification"
    num_classes: int = 2


@register_stage(MinDiffConfig)
def _build(cfg: MinDiffConfig) -> MinDiff:
    return MinDiff(cfg)


__all__ = ["MinDiff", "MinDiffConfig", "kernel_matrix", "mmd_squared"]
