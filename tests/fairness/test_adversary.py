"""The adversarial debiasing stage (Zhang, Lemoine & Mitchell 2018) in the train step.

(1) its gradient rule on hand-made pytrees against the formula written out in numpy on the
flattened vectors; (2) through the real sharded step on synthetic classification batches: with
alpha = 0 and no projection the model trains exactly as without the stage (the adversary's term
reaches nothing), with alpha > 0 it does not, the adversary learns identity from the label-
correlated logit, and a sharded, microbatched run equals one device; (3) built from the config,
with bad values refused in one sentence."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from holo_jax.config import TrainConfig, override
from holo_jax.errors import HoloError
from holo_jax.fairness.adversary import AdversarialDebias, AdversarialDebiasConfig, base_rate_log_odds, zhang_update
from holo_jax.train.stages import build_stages
from holo_jax.train.tasks import SequenceClassification
from tests.train.helpers import TINY, run_steps

IDENTITIES = ("female", "male", "muslim")
TASK = SequenceClassification(2, IDENTITIES)
# TINY with one layer: the stage reads only the logit, and each run here compiles a step.
MODEL = dataclasses.replace(TINY, n_layers=1)
ROWS, SEQ = 16, MODEL.max_len


def _tree(seed: int, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    return {"a": jnp.asarray(scale * rng.normal(size=(3, 4)), jnp.float32),
            "b": {"c": jnp.asarray(scale * rng.normal(size=(5,)), jnp.float32),
                  "d": jnp.asarray(scale * rng.normal(size=()), jnp.float32)}}


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _add(*trees):
    return jax.tree.map(lambda *x: sum(x), *trees)


# ----------------------------------------------------------------------------------------
# (1) the gradient rule


@pytest.mark.parametrize("projection", [True, False])
def test_grads_hook_is_zhangs_update(projection):
    g_task, g_adv, alpha = _tree(0), _tree(1), 0.7
    stage = _stage(alpha=alpha, projection=projection)
    state = stage.init(jax.random.key(0), {})
    new, new_state = stage.grads(_add(g_task, g_adv), {"task": g_task, "adversary": g_adv}, state, {}, None)
    t, a, got = _flat(g_task), _flat(g_adv), _flat(new)
    proj = (t @ a) / (a @ a) * a if projection else 0.0
    np.testing.assert_allclose(got, t - proj - alpha * a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(new_state["cosine"]), t @ a / np.linalg.norm(t) / np.linalg.norm(a), rtol=1e-5)
    assert float(new_state["alpha"]) == pytest.approx(alpha)
    if projection:
        # What is left of the task's gradient cannot help (or hurt) the adversary to first order.
        assert abs((_flat(new) + alpha * a) @ a) < 1e-5 * np.linalg.norm(t) * np.linalg.norm(a)
    assert jax.tree.structure(new) == jax.tree.structure(g_task)


def test_zero_adversary_gradient_leaves_the_task_gradient():
    g_task, zero = _tree(2), jax.tree.map(jnp.zeros_like, _tree(2))
    new, cosine = zhang_update(g_task, g_task, zero, jnp.float32(3.0), projection=True)
    for got, want in zip(jax.tree.leaves(new), jax.tree.leaves(g_task)):
        np.testing.assert_array_equal(got, want)  # exact: no 0/0, no NaN
    assert float(cosine) == 0.0


def test_other_terms_in_the_total_pass_through():
    # A second stage's term (e.g. a MinDiff penalty) is part of the total; it must survive.
    g_task, g_adv, other = _tree(3), _tree(4), _tree(5)
    new, _ = zhang_update(_add(g_task, g_adv, other), g_task, g_adv, jnp.float32(0.5), projection=True)
    alone, _ = zhang_update(_add(g_task, g_adv), g_task, g_adv, jnp.float32(0.5), projection=True)
    np.testing.assert_allclose(_flat(new), _flat(alone) + _flat(other), rtol=1e-5, atol=1e-6)


def test_sqrt_schedule_grows_with_applied_steps_after_the_warmup():
    stage = AdversarialDebias(AdversarialDebiasConfig(identities=IDENTITIES, alpha=0.5, alpha_schedule="sqrt",
                                                      warmup_steps=0))
    assert [float(stage.alpha(jnp.int32(c))) for c in (0, 3, 8)] == pytest.approx([0.5, 1.0, 1.5])
    warm = AdversarialDebias(AdversarialDebiasConfig(identities=IDENTITIES, alpha=0.5, alpha_schedule="sqrt",
                                                     warmup_steps=10))
    assert [float(warm.alpha(jnp.int32(c))) for c in (0, 9, 10, 13, 18)] == pytest.approx([0, 0, 0.5, 1.0, 1.5])
    constant = AdversarialDebias(AdversarialDebiasConfig(identities=IDENTITIES, alpha=0.5, warmup_steps=2))
    assert [float(constant.alpha(jnp.int32(c))) for c in (1, 2, 8)] == pytest.approx([0, 0.5, 0.5])


def test_the_base_rate_prior_is_the_add_one_half_estimate():
    np.testing.assert_allclose(base_rate_log_odds(jnp.zeros(2), jnp.float32(0)), [0.0, 0.0])
    p = 3.5 / 10
    np.testing.assert_allclose(base_rate_log_odds(jnp.array([3.0, 0.0]), jnp.float32(9)),
                               [np.log(p / (1 - p)), np.log(0.05 / 0.95)], rtol=1e-5)


def test_during_the_warmup_the_predictor_gets_the_task_gradient_alone():
    g_task, g_adv, other = _tree(3), _tree(4), _tree(5)
    new, _ = zhang_update(_add(g_task, g_adv, other), g_task, g_adv, jnp.float32(0.0), projection=True,
                          active=jnp.bool_(False))
    np.testing.assert_allclose(_flat(new), _flat(g_task) + _flat(other), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------
# (2) through the step


def classification_batch(seed: int, rows: int = ROWS) -> dict[str, np.ndarray]:
    """Random tokens and lengths; the label is written in the tokens (label-1 rows draw from the upper
    half of the byte range) so that a tiny model learns it in a few steps; `female` is mostly the
    label's value, `male` mostly its opposite, `muslim` independent of it."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, rows).astype(np.int32)
    tokens = (rng.integers(0, 128, (rows, SEQ)) + 128 * label[:, None]).astype(np.int32)
    lengths = rng.integers(SEQ // 2, SEQ + 1, rows).astype(np.int32)
    agree = rng.random((rows, 2)) < 0.9
    identities = np.stack([np.where(agree[:, 0], label, 1 - label), np.where(agree[:, 1], 1 - label, label),
                           (rng.random(rows) < 0.3).astype(np.int32)], axis=1).astype(np.int32)
    return {"tokens": tokens, "lengths": lengths, "label": label, "identities": identities}


def _stage(**settings) -> AdversarialDebias:
    # No warm-up: these runs are a few steps long and check the game itself.
    return AdversarialDebias(AdversarialDebiasConfig(identities=IDENTITIES, **{"warmup_steps": 0, **settings}))


BATCHES = [classification_batch(s) for s in range(3)]


@pytest.fixture(scope="module")
def plain():
    """The model trained on BATCHES without the stage."""
    return run_steps((1, 1, 1), BATCHES, task=TASK, model_cfg=MODEL)[0]


def _max_difference(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_with_alpha_zero_and_no_projection_the_model_trains_as_without_the_stage(plain):
    off, hist = run_steps((1, 1, 1), BATCHES, task=TASK, model_cfg=MODEL,
                          stages=(_stage(alpha=0.0, projection=False),))
    assert _max_difference(plain.params, off.params) < 1e-6
    # ... while the adversary itself trained, on a term whose gradient the step did pull back.
    assert int(off.stage_states["adversarial_debias"]["count"]) == len(BATCHES)
    # The base rates it predicts beyond are the counts of every row of every applied step.
    np.testing.assert_array_equal(off.stage_states["adversarial_debias"]["members_seen"],
                                  sum(b["identities"].sum(axis=0) for b in BATCHES))
    assert float(off.stage_states["adversarial_debias"]["rows_seen"]) == ROWS * len(BATCHES)
    assert all(np.isfinite(m["adversarial_debias/loss"]) and m["finite"] for m, _ in hist)
    assert abs(float(hist[-1][0]["adversarial_debias/cosine"])) > 0


def test_the_adversary_learns_identity_from_the_label_correlated_logit():
    # No label input (demographic parity): the logit is all the adversary sees, so beating the
    # base-rate entropy (`chance_loss`) means it reads identity off the predictor's score.
    batches = [classification_batch(100 + s, rows=32) for s in range(24)]
    _, hist = run_steps((1, 1, 1), batches, task=TASK, model_cfg=MODEL, total_steps=24,
                        stages=(_stage(alpha=0.0, projection=False, use_label=False, learning_rate=0.2),))
    loss = np.array([m["adversarial_debias/loss"] for m, _ in hist])
    chance = np.array([m["adversarial_debias/chance_loss"] for m, _ in hist])
    accuracy = np.array([m["accuracy"] for m, _ in hist])
    assert accuracy[-4:].mean() > 0.9, accuracy  # the predictor learned the label ...
    assert loss[-4:].mean() < loss[:4].mean() - 0.3, loss  # ... and the adversary learned from it
    assert loss[-4:].mean() < chance[-4:].mean() - 0.3, (loss, chance)
    # The base-rate bar: before any row the prior is p = 1/2 for each of the three identities, later
    # the running rates; the adversary beats it by as much as it beats the batch's own entropy.
    prior = np.array([m["adversarial_debias/prior_loss"] for m, _ in hist])
    np.testing.assert_allclose(prior[0], 3 * np.log(2.0), rtol=1e-6)
    assert np.all(prior[1:] >= chance[1:] - 1e-6), (prior, chance)  # no constant beats the batch's own rates
    assert loss[-4:].mean() < prior[-4:].mean() - 0.3, (loss, prior)
    # `muslim` is independent of the label: nothing to learn beyond its base rate.
    assert hist[-1][0]["adversarial_debias/loss/female"] < hist[-1][0]["adversarial_debias/loss/muslim"]


@pytest.mark.slow
def test_the_reversal_reaches_the_model_and_sharded_microbatched_equals_one_device(plain, require_devices):
    require_devices(4)
    stage = lambda: _stage(alpha=0.5, projection=True, emit_every=1)  # noqa: E731
    one, hist_one = run_steps((1, 1, 1), BATCHES, task=TASK, model_cfg=MODEL, stages=(stage(),))
    assert _max_difference(plain.params, one.params) > 1e-4  # Zhang's update is what the optimizer got
    many, hist_many = run_steps((2, 1, 2), BATCHES, task=TASK, model_cfg=MODEL, stages=(stage(),), microbatches=2)
    for a, b in zip(jax.tree.leaves((one.params, one.stage_states)), jax.tree.leaves((many.params, many.stage_states))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for (m1, e1), (m2, e2) in zip(hist_one, hist_many):
        for key in ("adversarial_debias/loss", "adversarial_debias/cosine", "adversarial_debias/alpha"):
            np.testing.assert_allclose(m1[key], m2[key], rtol=1e-4, atol=1e-6)
        assert float(e1["adversarial_debias"]["rows"]) == float(e2["adversarial_debias"]["rows"]) == ROWS


def test_a_batch_of_another_width_is_one_sentence():
    wrong = SequenceClassification(2, IDENTITIES[:2])
    batch = classification_batch(0)
    batch["identities"] = batch["identities"][:, :2]
    with pytest.raises(HoloError, match=r"predicts 3 identities .* carries 2 identity columns"):
        run_steps((1, 1, 1), [batch], task=wrong, model_cfg=MODEL, stages=(_stage(),))


# ----------------------------------------------------------------------------------------
# (3) from the config


def test_builds_from_the_config():
    cfg = override(TrainConfig(), ["stages=adversarial_debias", "stages.adversarial_debias.alpha=0.5",
                                   "stages.adversarial_debias.identities=female,male,muslim",
                                   "stages.adversarial_debias.alpha_schedule=sqrt"])
    cfg.check()
    (stage,) = build_stages(cfg.stages)
    assert isinstance(stage, AdversarialDebias) and stage.name == "adversarial_debias"
    assert stage.cfg.alpha == 0.5 and stage.cfg.alpha_schedule == "sqrt" and stage.identities == IDENTITIES
    assert stage.grad_terms == ("task", "adversary")
    assert cfg.to_dict()["stages"][0]["kind"] == "adversarial_debias"  # recorded in config.json


def test_identities_can_come_from_the_task():
    (stage,) = build_stages(override(TrainConfig(), ["stages=adversarial_debias:adv"]).stages)
    with pytest.raises(HoloError, match=r"stages\.adv\.identities"):
        stage.init(jax.random.key(0), {})
    bound = stage.with_identities(TASK.identities)
    assert bound.name == "adv" and bound.identities == IDENTITIES
    assert bound.init(jax.random.key(0), {})["adversary"]["out"]["w"].shape == (3, 3)


@pytest.mark.parametrize("field, value, message", [
    ("alpha", -1.0, "stages.adversarial_debias.alpha must be at least 0, got -1.0."),
    ("learning_rate", 0.0, "stages.adversarial_debias.learning_rate must be greater than 0, got 0.0."),
    ("alpha_schedule", "linear", "stages.adversarial_debias.alpha_schedule must be constant or sqrt, got `linear`."),
    ("hidden", -2, "stages.adversarial_debias.hidden must be at least 0, got -2."),
    ("identities", ("male", "male"), "stages.adversarial_debias.identities names male more than once; "
                                     "list each identity once."),
])
def test_bad_values_are_one_sentence(field, value, message):
    cfg = TrainConfig(stages=(dataclasses.replace(AdversarialDebiasConfig(), **{field: value}),))
    with pytest.raises(HoloError) as err:
        cfg.check()
    assert str(err.value) == message


def test_a_bad_override_is_one_sentence():
    with pytest.raises(HoloError, match=r"^stages\.adversarial_debias\.alpha must be at least 0, got -0\.5\.$"):
        override(TrainConfig(), ["stages=adversarial_debias", "stages.adversarial_debias.alpha=-0.5"])


def test_the_stage_takes_the_tasks_identities_and_refuses_another_task():
    from holo_jax.train.tasks import NextTokenLM

    (stage,) = build_stages(override(TrainConfig(), ["stages=adversarial_debias"]).stages, TASK)
    assert stage.identities == tuple(TASK.identities)
    with pytest.raises(HoloError, match="debiases a binary classifier"):
        build_stages(override(TrainConfig(), ["stages=adversarial_debias"]).stages, NextTokenLM())
    named = override(TrainConfig(), ["stages=adversarial_debias", "stages.adversarial_debias.identities=muslim"])
    with pytest.raises(HoloError, match="must be the task's identity columns in order"):
        build_stages(named.stages, TASK)
