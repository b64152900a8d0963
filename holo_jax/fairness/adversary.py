"""Adversarial debiasing inside the train step, for several protected attributes at once.

Zhang, Lemoine & Mitchell 2018, "Mitigating Unwanted Biases with Adversarial Learning" (AIES '18,
arXiv:1801.07593): an adversary A tries to predict the protected attributes Z from the predictor's
output; the predictor W follows

    g = grad_W L_P  -  proj_{grad_W L_A} grad_W L_P  -  alpha * grad_W L_A

(their eq. 1): the first term learns the task, the projection removes the part of the task's
gradient that would *help* the adversary, and the last term moves against it. Without the
projection this is plain gradient reversal (Ganin & Lempitsky 2015), which Zhang et al. show can
still leave the predictor drifting towards the adversary's benefit.

What this stage does differently from AIF360's `AdversarialDebiasing` (TF1, one attribute):
- every identity column of the batch (`batch["identities"]` [b, k], 1 = the example mentions it)
  is predicted at once, multi-label: k sigmoid outputs whose cross-entropies are summed, so one
  adversary and one projection cover gender, religion and ethnicity together;
- it runs inside the sharded, jitted step (holo_jax.train.stages): the adversary's gradient is a
  *sum* over rows returned as a statistic, so it adds up over microbatches and data-parallel
  replicas exactly like the model's, and the projection's dot products are taken over the whole
  parameter pytree (under GSPMD a `vdot` of a sharded leaf is already the global one).

The adversary's input follows AIF360's `_adversary_model`: s = sigmoid((1 + |c|) * logit) with a
learned c (the adversary may sharpen the predictor's probability, never flatten it), and with
`use_label` the features [s, s * y, s * (1 - y)], so it can tell identity from the score *within*
each class: the equality-of-odds variant of Zhang et al. (section 3), whose target is what the
BPSN/BNSP AUCs of Borkan et al. 2019 measure. Without the label it enforces demographic parity.

Binary classification only (the logit is the log-odds of class 1), as in Zhang et al. and AIF360.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

import jax
import jax.numpy as jnp
import optax

from holo_jax.config import NON_EMPTY, Above, AtLeast, StageConfig
from holo_jax.errors import HoloError
from holo_jax.train.stages import Stage, register_stage
from holo_jax.train.stats import Stat, safe_divide

PyTree = Any
TERM = "adversary"


@dataclasses.dataclass(frozen=True)
class AdversarialDebiasConfig(StageConfig):
    """`--set stages=adversarial_debias --set stages.adversarial_debias.identities=female,male,muslim`."""

    kind = "adversarial_debias"
    # The identity columns the batch carries, in order: the task's `task.identities`. The stage is
    # built from its own section only, so the names are repeated here; the step refuses a batch
    # whose `identities` has another width.
    identities: tuple[Annotated[str, NON_EMPTY], ...] = ()
    # Weight of the reversal term. 0.1 is AIF360's `adversary_loss_weight` default.
    alpha: Annotated[float, AtLeast(0.0)] = 0.1
    # "sqrt": alpha * sqrt(t) at the t-th applied step, Zhang et al.'s schedule (paired there with a
    # 1/t predictor learning rate, so the adversary's share grows as the task's steps shrink).
    alpha_schedule: Literal["constant", "sqrt"] = "constant"
    # The adversary's own Adam learning rate. AIF360 uses 0.001 for both players; this adversary is
    # a few dozen weights that must keep up with a predictor that changes every step, and 0.001
    # left it above the base-rate entropy (`chance_loss`) for the whole of a 1000-step run.
    learning_rate: Annotated[float, Above(0.0)] = 1e-2
    # Applied steps in which only the adversary learns (the predictor gets the task's gradient
    # alone): it starts the game calibrated instead of pushing the predictor with the error of its
    # initialisation. The sqrt schedule counts from the end of the warm-up.
    warmup_steps: Annotated[int, AtLeast(0)] = 100
    # 0: a linear adversary, as Zhang et al. and AIF360; else one hidden layer of this width.
    hidden: Annotated[int, AtLeast(0)] = 0
    # The adversary also sees the true label: equality of odds rather than demographic parity.
    use_label: bool = True
    # Zhang et al.'s projection term; off: plain gradient reversal, g_task - alpha * g_adv.
    projection: bool = True
    emit_every: Annotated[int, AtLeast(0)] = 0

    def check_relations(self, at: str) -> None:
        repeated = sorted({i for i in self.identities if self.identities.count(i) > 1})
        if repeated:
            raise HoloError(f"{at}.identities names {', '.join(repeated)} more than once; list each identity once.")


# ----------------------------------------------------------------------------------------
# Pytree algebra for the projection: global over every leaf, in float32.


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """<a, b> over all leaves (float32 accumulation, so bf16 leaves do not lose the sum)."""
    parts = [jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32)) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    return sum(parts, jnp.float32(0.0))


def zhang_update(grads: PyTree, g_task: PyTree, g_adv: PyTree, alpha: jax.Array, projection: bool,
                 active: jax.Array | bool = True) -> tuple[PyTree, jax.Array]:
    """(the predictor's gradient of Zhang et al. eq. 1, cos(g_task, g_adv)).

    `grads` is the step's total, which holds g_task + g_adv and whatever other stages added; the
    two are replaced by g_task - proj_{g_adv}(g_task) - alpha * g_adv, and the rest is kept, so
    this stage composes with other loss terms (e.g. a MinDiff penalty) instead of erasing them.
    With `active` false (the adversary's warm-up) they are replaced by g_task alone."""
    dot, adv_sq, task_sq = tree_vdot(g_task, g_adv), tree_vdot(g_adv, g_adv), tree_vdot(g_task, g_task)
    # |g_adv| = 0 (an adversary with nothing to say, e.g. a batch without identity mentions or
    # alpha's first steps at a saddle) must leave g_task untouched, not divide by zero. `tiny`
    # rather than 0 also keeps dot / adv_sq from overflowing on a denormal norm.
    coef = jnp.where(adv_sq > jnp.finfo(jnp.float32).tiny, dot / jnp.maximum(adv_sq, jnp.finfo(jnp.float32).tiny), 0.0)
    norms = jnp.sqrt(task_sq) * jnp.sqrt(adv_sq)
    cosine = jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1.0), 0.0)
    coef = jnp.where(active, coef, 0.0) if projection else jnp.zeros_like(coef)

    def leaf(total, t, a):
        rest = total - t - a  # other stages' terms; rounding noise when this stage is alone
        return (t - (coef + alpha) * a + rest).astype(total.dtype)

    return jax.tree.map(leaf, grads, g_task, g_adv), cosine


# ----------------------------------------------------------------------------------------
# The adversary


def _features(adversary: PyTree, log_odds_b: jax.Array, label_b: jax.Array | None) -> jax.Array:
    s_b1 = jax.nn.sigmoid((1.0 + jnp.abs(adversary["c"])) * log_odds_b)[:, None]
    if label_b is None:
        return s_b1
    y_b1 = label_b.astype(jnp.float32)[:, None]
    return jnp.concatenate([s_b1, s_b1 * y_b1, s_b1 * (1.0 - y_b1)], axis=1)


def adversary_logits(adversary: PyTree, log_odds_b: jax.Array, label_b: jax.Array | None,
                     prior_k: jax.Array | None = None) -> jax.Array:
    """[b, k] logits of identity membership from the predictor's log-odds (and the label), on top of
    `prior_k`, the log-odds of each identity's base rate (0 when None)."""
    h = _features(adversary, log_odds_b, label_b)
    if "hidden" in adversary:
        # leaky, so that no hidden unit can die on the narrow range a sigmoid input spans
        h = jax.nn.leaky_relu(h @ adversary["hidden"]["w"] + adversary["hidden"]["b"])
    logits_bk = h @ adversary["out"]["w"] + adversary["out"]["b"]
    return logits_bk if prior_k is None else logits_bk + prior_k


def adversary_losses(adversary: PyTree, log_odds_b: jax.Array, label_b: jax.Array | None,
                     identities_bk: jax.Array, prior_k: jax.Array | None = None) -> jax.Array:
    """[b, k] sigmoid cross-entropies, one per identity column."""
    return optax.sigmoid_binary_cross_entropy(adversary_logits(adversary, log_odds_b, label_b, prior_k),
                                              identities_bk.astype(jnp.float32))


def base_rate_log_odds(members_seen_k: jax.Array, rows_seen: jax.Array) -> jax.Array:
    """log-odds of each identity's share of the rows seen so far, by the add-one-half (Krichevsky-
    Trofimov) estimate: 0 (p = 1/2) before any row, never infinite for an identity not yet seen."""
    p_k = (members_seen_k + 0.5) / (rows_seen + 1.0)
    return jnp.log(p_k) - jnp.log1p(-p_k)


def _entropy(p: jax.Array) -> jax.Array:
    """Bernoulli entropy in nats, 0 at p in {0, 1}."""
    q = jnp.clip(p, 1e-12, 1.0 - 1e-12)
    return jnp.where((p > 0) & (p < 1), -(q * jnp.log(q) + (1 - q) * jnp.log1p(-q)), 0.0)


def binary_logits(outputs: dict, what: str) -> jax.Array:
    """The task's logits [b, 2], checked at trace time; `what` says who needs them, for the sentence."""
    logits_bc = outputs["logits"]
    if logits_bc.ndim != 2 or logits_bc.shape[-1] != 2:
        raise HoloError(f"{what} (logits [batch, 2]), got logits of shape {tuple(logits_bc.shape)}; use "
                        f"task.kind=sequence_classification with task.num_classes=2.")
    return logits_bc


class AdversarialDebias(Stage):
    """The stage (holo_jax.train.stages contract). Term `adversary`: the adversary's loss as a
    function of the model (adversary fixed); the step pulls it back separately from the task's
    (`grad_terms`) and `grads` combines them by Zhang et al.'s rule.

    State: {"adversary": params, "opt": Adam state, "count": applied steps, "alpha": the weight the
    last step used, "cosine": cos(g_task, g_adv) of the last step, "members_seen" [k] and
    "rows_seen": the membership counts of the rows of all applied steps (the base rates)}.
    Metrics: `loss` (adversary cross-entropy per row, summed over identities), `prior_loss` (the
    same for a constant predictor at the running base rates the adversary predicts beyond: `loss`
    at or above it means the output carries no identity information the adversary can find, the
    goal), `chance_loss` (the entropy of this batch's own base rates: an oracle's bar, below
    `prior_loss` by the batch's sampling noise, ~0.2 nats at 32 rows and 16 identities of ~4%
    each, so it is not what `loss` should be compared with), `loss/<identity>`, `alpha`,
    `cosine`."""

    grad_terms = ("task", TERM)

    def __init__(self, cfg: AdversarialDebiasConfig = AdversarialDebiasConfig()):
        self.cfg, self.name, self.emit_every = cfg, cfg.stage_name, cfg.emit_every
        self.identities = tuple(cfg.identities)
        self.opt = optax.adam(cfg.learning_rate)

    def with_identities(self, identities) -> "AdversarialDebias":
        """The same stage for the task's identity columns (`task.identities`), for callers that
        build it next to the task rather than from a section that repeats them."""
        stage = AdversarialDebias(dataclasses.replace(self.cfg, identities=tuple(identities)))
        stage.cfg.check(stage.cfg.section_key())
        stage.name = self.name
        return stage

    def bind_task(self, task) -> None:
        """Predict the task's identity columns unless the section names them; only a binary
        sequence classifier has the log-odds the adversary reads."""
        if getattr(task, "name", None) != "sequence_classification" or getattr(task, "num_classes", 0) != 2:
            raise HoloError(f"stage `{self.name}` ({self.cfg.kind}) debiases a binary classifier: set "
                            f"task.kind=sequence_classification and task.num_classes=2.")
        if not self.identities:
            self.identities = tuple(task.identities)
        elif tuple(task.identities) != self.identities:
            raise HoloError(f"{self.cfg.section_key()}.identities ({', '.join(self.identities)}) must be the task's "
                            f"identity columns in order ({', '.join(task.identities) or 'none'}); leave it empty "
                            f"to use task.identities.")

    # -- hooks ------------------------------------------------------------------------

    def init(self, key, params):
        k = len(self.identities)
        if not k:
            raise HoloError(f"stage `{self.name}` has no identities to predict: set "
                            f"{self.cfg.section_key()}.identities to the task's identities (task.identities).")
        width = 3 if self.cfg.use_label else 1
        glorot = jax.nn.initializers.glorot_normal()
        k_hidden, k_out = jax.random.split(key)
        adversary = {"c": jnp.ones((), jnp.float32)}  # AIF360's initial c = 1: slope 2 on the log-odds
        if self.cfg.hidden:
            adversary["hidden"] = {"w": glorot(k_hidden, (width, self.cfg.hidden), jnp.float32),
                                   "b": jnp.zeros((self.cfg.hidden,), jnp.float32)}
            width = self.cfg.hidden
        adversary["out"] = {"w": glorot(k_out, (width, k), jnp.float32), "b": jnp.zeros((k,), jnp.float32)}
        return {"adversary": adversary, "opt": self.opt.init(adversary), "count": jnp.zeros((), jnp.int32),
                "alpha": jnp.zeros((), jnp.float32), "cosine": jnp.zeros((), jnp.float32),
                "members_seen": jnp.zeros((k,), jnp.float32), "rows_seen": jnp.zeros((), jnp.float32)}

    def _inputs(self, batch, outputs):
        """(log-odds [b], label [b] or None, identities [b, k]), after checking shapes at trace time."""
        logits_bc = binary_logits(outputs, f"stage `{self.name}` debiases a binary classifier")
        if "identities" not in batch or batch["identities"].shape[-1] != len(self.identities):
            got = batch["identities"].shape[-1] if "identities" in batch else 0
            raise HoloError(f"stage `{self.name}` predicts {len(self.identities)} identities "
                            f"({', '.join(self.identities)}) but the batch carries {got} identity columns; "
                            f"set {self.cfg.section_key()}.identities to task.identities.")
        # log p1/p0 of a 2-way softmax: the single logit Zhang et al.'s adversary reads
        log_odds_b = (logits_bc[:, 1] - logits_bc[:, 0]).astype(jnp.float32)
        label_b = batch["label"] if self.cfg.use_label else None
        return log_odds_b, label_b, batch["identities"]

    def loss(self, params, stage_state, batch, outputs, key):
        log_odds_b, label_b, identities_bk = self._inputs(batch, outputs)
        adversary = stage_state["adversary"]
        rows = jnp.float32(log_odds_b.shape[0])
        # The adversary predicts membership beyond its base rate, known from the rows of earlier
        # steps (so every microbatch and replica uses the same value). Without it a fresh
        # adversary spends its first steps learning that identities are rare, and meanwhile its
        # gradient on the model says "less of every identity", nearly parallel to the task's
        # (cosine 0.99 measured on the embedded set), so the projection removes the task's
        # learning and the reversal pushes every score one way (task loss 0.6 -> 2.9).
        prior_k = base_rate_log_odds(stage_state["members_seen"], stage_state["rows_seen"])
        # The adversary's own gradient, on stop_gradient of the predictor's output: it learns
        # from the model without pushing on it. A sum over rows, so it adds up over microbatches
        # and replicas; `update` divides by the global row count.
        adv_sum, adv_grads = jax.value_and_grad(lambda a: adversary_losses(
            a, jax.lax.stop_gradient(log_odds_b), label_b, identities_bk, prior_k).sum())(adversary)
        # The model's term: the same loss as a function of the model (the step differentiates
        # `params` only, so the adversary is held fixed here without a stop_gradient).
        per_row_bk = adversary_losses(adversary, log_odds_b, label_b, identities_bk, prior_k)
        terms = {TERM: Stat(per_row_bk.sum(), rows)}
        # What an adversary that knows only the base rates would score on these rows: the bar the
        # score's identity information is measured against.
        prior_sum = optax.sigmoid_binary_cross_entropy(jnp.broadcast_to(prior_k, identities_bk.shape),
                                                       identities_bk.astype(jnp.float32)).sum()
        stats = {"loss": Stat(adv_sum, rows), "prior_loss": Stat(prior_sum, rows),
                 "per_identity": Stat(jax.lax.stop_gradient(per_row_bk).sum(axis=0), rows),
                 "membership": Stat(identities_bk.astype(jnp.float32).sum(axis=0), rows),
                 "grads": Stat(adv_grads, rows)}
        return terms, stats

    def alpha(self, count: jax.Array) -> jax.Array:
        """The reversal weight of the step after `count` applied ones: 0 during the warm-up."""
        alpha = jnp.float32(self.cfg.alpha)
        played = count - self.cfg.warmup_steps  # steps of the game before this one
        if self.cfg.alpha_schedule == "sqrt":
            alpha = alpha * jnp.sqrt(jnp.maximum(played + 1, 0).astype(jnp.float32))
        return jnp.where(played >= 0, alpha, 0.0)

    def grads(self, grads, term_grads, stage_state, stats, key):
        count = stage_state["count"]
        alpha = self.alpha(count)
        playing = count >= self.cfg.warmup_steps
        new, cosine = zhang_update(grads, term_grads["task"], term_grads[TERM], alpha, self.cfg.projection,
                                   active=playing)
        return new, {**stage_state, "alpha": alpha, "cosine": cosine}

    def update(self, stage_state, stats, key):
        mean_grads = stats["grads"].mean()
        updates, opt = self.opt.update(mean_grads, stage_state["opt"], stage_state["adversary"])
        return {**stage_state, "adversary": optax.apply_updates(stage_state["adversary"], updates), "opt": opt,
                "count": stage_state["count"] + 1,
                "members_seen": stage_state["members_seen"] + stats["membership"].sum,
                "rows_seen": stage_state["rows_seen"] + stats["membership"].count}

    def metrics(self, stage_state, stats):
        rows = stats["loss"].count
        out = {"loss": safe_divide(stats["loss"].sum, rows),
               "chance_loss": _entropy(safe_divide(stats["membership"].sum, rows)).sum(),
               "prior_loss": stats["prior_loss"].mean(),
               "alpha": stage_state["alpha"], "cosine": stage_state["cosine"]}
        per_identity = safe_divide(stats["per_identity"].sum, rows)
        out.update({f"loss/{name}": per_identity[j] for j, name in enumerate(self.identities)})
        return out

    def emit(self, stage_state, stats):
        return {"loss_sum": stats["loss"].sum, "rows": stats["loss"].count}


@register_stage(AdversarialDebiasConfig)
def _build(cfg: AdversarialDebiasConfig) -> AdversarialDebias:
    return AdversarialDebias(cfg)


__all__ = ["AdversarialDebias", "AdversarialDebiasConfig", "adversary_logits", "adversary_losses",
           "base_rate_log_odds", "tree_vdot", "zhang_update"]
