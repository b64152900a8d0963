"""The MinDiff stage (Prost et al. 2019; TF Model Remediation's MMDLoss) in the train step.

(1) the estimator against TF's formula written out in numpy, pair by pair; zero for identical
score distributions and for a missing group; (2) the loss hook: the groups (label == on_label,
mentions any / none of the chosen identities) and the (sum, count) form of the term; (3) through
the real step on synthetic classification batches: weight 0 trains exactly as without the stage,
and on a batch with a planted bias the term's gradient keeps the groups' mean scores closer than
training without it, and two fp32 replicas equal one device; (4) built from the config, with bad
values refused in one sentence."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from holo_jax.config import OptimConfig, TrainConfig, override
from holo_jax.errors import HoloError
from holo_jax.fairness.mindiff import MinDiff, MinDiffConfig, mmd_squared
from holo_jax.train.stages import build_stages
from holo_jax.train.tasks import NextTokenLM, SequenceClassification
from tests.train.helpers import TINY, run_steps

IDENTITIES = ("female", "male", "muslim")
TASK = SequenceClassification(2, IDENTITIES)
MODEL = dataclasses.replace(TINY, n_layers=1)  # the stage reads only the logit
ROWS, SEQ = 32, MODEL.max_len


def _numpy_mmd(a, b, kernel: str, bandwidth: float) -> float:
    """TF MMDLoss: mean k over a x a + mean over b x b - 2 mean over a x b, diagonal included."""
    def k(x, y):
        d = float(x) - float(y)
        return np.exp(-d * d / bandwidth ** 2) if kernel == "gaussian" else np.exp(-abs(d) / bandwidth)

    mean = lambda xs, ys: np.mean([k(x, y) for x in xs for y in ys])  # noqa: E731
    return mean(a, a) + mean(b, b) - 2 * mean(a, b)


# ----------------------------------------------------------------------------------------
# (1) the estimator


@pytest.mark.parametrize("kernel, bandwidth", [("gaussian", 0.1), ("gaussian", 0.37), ("laplacian", 0.1)])
def test_mmd_is_tfs_formula(kernel, bandwidth):
    rng = np.random.default_rng(0)
    p = rng.random(11)
    in_a = np.array([1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0], np.float32)
    in_b = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0], np.float32)  # row 6 and 10 are in neither
    got = float(mmd_squared(jnp.asarray(p), jnp.asarray(in_a), jnp.asarray(in_b), kernel, bandwidth))
    want = _numpy_mmd(p[in_a > 0], p[in_b > 0], kernel, bandwidth)
    assert want > 0.05  # the fixture separates the groups: a wrong sign or factor shows
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_identical_score_distributions_give_zero_and_a_zero_gradient():
    scores = jnp.asarray([0.1, 0.7, 0.7, 0.3, 0.95])
    p = jnp.concatenate([scores, scores[::-1]])  # group b: the same scores in another order
    in_a = jnp.asarray([1.0] * 5 + [0.0] * 5)
    value, grad = jax.value_and_grad(lambda q: mmd_squared(q, in_a, 1.0 - in_a))(p)
    assert abs(float(value)) < 1e-6
    np.testing.assert_allclose(np.asarray(grad), 0.0, atol=1e-5)
    # ... while moving one score apart makes it positive.
    assert float(mmd_squared(p.at[0].set(0.5), in_a, 1.0 - in_a)) > 1e-3


def test_a_missing_group_gives_zero_with_a_finite_gradient():
    p, in_a = jnp.asarray([0.2, 0.9, 0.4]), jnp.asarray([1.0, 1.0, 1.0])
    for kernel in ("gaussian", "laplacian"):
        value, grad = jax.value_and_grad(lambda q: mmd_squared(q, in_a, 0.0 * in_a, kernel))(p)
        assert float(value) == 0.0 and np.all(np.asarray(grad) == 0.0)


# ----------------------------------------------------------------------------------------
# (2) the loss hook


def _logits(p):
    """[b, 2] logits whose softmax[1] is p."""
    p = np.asarray(p, np.float64)
    return jnp.asarray(np.stack([np.zeros_like(p), np.log(p / (1 - p))], axis=1), jnp.float32)


@pytest.mark.parametrize("on_label, chosen", [(0, ()), (1, ()), (0, ("muslim",))])
def test_the_term_compares_the_chosen_groups_within_one_label(on_label, chosen):
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.95, 24)
    # Each label's rows cycle through: female only, muslim only, none, male and muslim. With
    # identities=(muslim,) the female-only rows belong to the group that mentions none.
    label = (np.arange(24) // 4 % 2).astype(np.int32)
    identities = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 1, 1]] * 6, np.int32)
    stage = MinDiff(MinDiffConfig(weight=2.5, on_label=on_label, identities=chosen)).for_columns(IDENTITIES)
    batch = {"label": jnp.asarray(label), "identities": jnp.asarray(identities)}
    terms, stats = stage.loss({}, (), batch, {"logits": _logits(p)}, None)

    cols = [IDENTITIES.index(i) for i in (chosen or IDENTITIES)]
    mentions = identities[:, cols].any(axis=1)
    in_a, in_b = (label == on_label) & mentions, (label == on_label) & ~mentions
    assert in_a.sum() >= 2 and in_b.sum() >= 2
    want = _numpy_mmd(p[in_a], p[in_b], "gaussian", 0.1)
    term = terms["mindiff"]
    # count: this batch's rows of the label (global counts add), sum: weight x rows x MMD^2.
    assert float(term.count) == (label == on_label).sum()
    np.testing.assert_allclose(float(term.sum / term.count), 2.5 * want, rtol=1e-4)
    metrics = stage.metrics((), stats)
    np.testing.assert_allclose(float(metrics["mmd"]), want, rtol=1e-4)
    assert float(metrics["identity_rows"]) == in_a.sum() and float(metrics["other_rows"]) == in_b.sum()
    np.testing.assert_allclose(float(metrics["identity_mean"]), p[in_a].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["other_mean"]), p[in_b].mean(), rtol=1e-5)


# ----------------------------------------------------------------------------------------
# (3) through the step


def planted_bias_batch(seed: int, rows: int = ROWS) -> dict[str, np.ndarray]:
    """Label-1 rows draw tokens from the upper half of the byte range, label-0 rows from the lower
    half, except label-0 rows that mention an identity: half their tokens are toxic-looking (upper
    half), as identity terms co-occur with toxicity in comment data. A model that learns
    "upper half = toxic" scores those non-toxic identity rows higher: an FPR gap."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, rows).astype(np.int32)
    identities = (rng.random((rows, 3)) < 0.35).astype(np.int32)
    planted = (label == 0) & identities.any(axis=1)
    upper = (label[:, None] == 1) | (planted[:, None] & (rng.random((rows, SEQ)) < 0.5))
    tokens = (rng.integers(0, 128, (rows, SEQ)) + 128 * upper).astype(np.int32)
    lengths = rng.integers(SEQ // 2, SEQ + 1, rows).astype(np.int32)
    return {"tokens": tokens, "lengths": lengths, "label": label, "identities": identities}


BATCHES = [planted_bias_batch(s) for s in range(10)]
OPTIM = OptimConfig(learning_rate=3e-3, warmup_steps=0)


def _run(stages):
    return run_steps((1, 1, 1), BATCHES, task=TASK, model_cfg=MODEL, optim=OPTIM, total_steps=len(BATCHES),
                     stages=stages)


def _stage(**settings) -> MinDiff:
    return MinDiff(MinDiffConfig(**settings)).for_columns(IDENTITIES)


@pytest.fixture(scope="module")
def monitor():
    """weight 0: the stage measures (the baseline's gap) and must not touch training."""
    return _run((_stage(weight=0.0),))


def _gaps(history) -> np.ndarray:
    return np.array([m["mindiff/identity_mean"] - m["mindiff/other_mean"] for m, _ in history])


def test_weight_zero_trains_exactly_as_without_the_stage(monitor):
    plain, plain_hist = _run(())
    off, off_hist = monitor
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(off.params), strict=True):
        np.testing.assert_array_equal(a, b)
    for (m1, _), (m2, _) in zip(plain_hist, off_hist):
        assert m1["loss"] == m2["loss"] and m1["grad_norm"] == m2["grad_norm"]
    # ... while it did measure: the planted bias opens a gap once the model learns the tokens.
    assert all(np.isfinite(m["mindiff/mmd"]) for m, _ in off_hist)
    assert _gaps(off_hist)[1:].mean() > 0.05, _gaps(off_hist)


def test_the_term_closes_the_gap_on_a_planted_bias(monitor):
    _, base_hist = monitor
    _, hist = _run((_stage(weight=1.5),))
    base, debiased = np.abs(_gaps(base_hist)), np.abs(_gaps(hist))
    # Step 1's metrics precede any update: both runs start from the same scores.
    np.testing.assert_allclose(debiased[0], base[0], rtol=1e-5)
    assert debiased[2:].mean() < 0.5 * base[2:].mean(), (debiased, base)
    mmd = np.array([m["mindiff/mmd"] for m, _ in hist])
    base_mmd = np.array([m["mindiff/mmd"] for m, _ in base_hist])
    assert mmd[2:].mean() < base_mmd[2:].mean(), (mmd, base_mmd)
    assert all(m["finite"] for m, _ in hist)


def test_under_fp32_two_replicas_see_the_global_batch(require_devices):
    # grad_comm=fp32 with one microbatch: the compiler reduces the pairwise sums across devices,
    # so the term is the global batch's MMD^2, as on one device (the module docstring's claim).
    require_devices(2)
    batches = BATCHES[:3]
    one = run_steps((1, 1, 1), batches, task=TASK, model_cfg=MODEL, optim=OPTIM, stages=(_stage(),))
    two = run_steps((2, 1, 1), batches, task=TASK, model_cfg=MODEL, optim=OPTIM, stages=(_stage(),))
    for (m1, _), (m2, _) in zip(one[1], two[1]):
        np.testing.assert_allclose(m1["mindiff/mmd"], m2["mindiff/mmd"], rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(one[0].params), jax.tree.leaves(two[0].params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------
# (4) from the config


def test_builds_from_the_config_and_binds_the_tasks_identities():
    cfg = override(TrainConfig(), ["stages=mindiff", "stages.mindiff.weight=2.0", "stages.mindiff.kernel=laplacian",
                                   "stages.mindiff.identities=muslim,female", "stages.mindiff.on_label=1"])
    cfg.check()
    (stage,) = build_stages(cfg.stages, TASK)
    assert isinstance(stage, MinDiff) and stage.name == "mindiff" and stage.grad_terms == ()
    assert (stage.cfg.weight, stage.cfg.kernel, stage.cfg.on_label) == (2.0, "laplacian", 1)
    assert stage.identities == ("muslim", "female") and stage.columns == IDENTITIES
    assert cfg.to_dict()["stages"][0]["kind"] == "mindiff"  # recorded in config.json
    (every,) = build_stages(override(TrainConfig(), ["stages=mindiff:md"]).stages, TASK)
    assert every.name == "md" and every.identities == IDENTITIES and every.cfg.bandwidth == 0.1


def test_an_identity_the_task_lacks_or_another_task_is_one_sentence():
    named = override(TrainConfig(), ["stages=mindiff", "stages.mindiff.identities=jewish"])
    with pytest.raises(HoloError, match=r"^stages\.mindiff\.identities names jewish, which the task's batches do "
                                        r"not carry .*\.$"):
        build_stages(named.stages, TASK)
    with pytest.raises(HoloError, match="compares a binary classifier's scores"):
        build_stages(override(TrainConfig(), ["stages=mindiff"]).stages, NextTokenLM())
    with pytest.raises(HoloError, match="no identity group to compare"):
        build_stages(override(TrainConfig(), ["stages=mindiff"]).stages, SequenceClassification(2, ()))


@pytest.mark.parametrize("field, value, message", [
    ("weight", -1.0, "stages.mindiff.weight must be at least 0, got -1.0."),
    ("bandwidth", 0.0, "stages.mindiff.bandwidth must be greater than 0, got 0.0."),
    ("kernel", "cosine", "stages.mindiff.kernel must be gaussian or laplacian, got `cosine`."),
    ("on_label", 2, "stages.mindiff.on_label must be in [0, 1], got 2."),
    ("identities", ("male", "male"), "stages.mindiff.identities names male more than once; list each identity once."),
])
def test_bad_values_are_one_sentence(field, value, message):
    cfg = TrainConfig(stages=(dataclasses.replace(MinDiffConfig(), **{field: value}),))
    with pytest.raises(HoloError) as err:
        cfg.check()
    assert str(err.value) == message


def test_a_bad_override_is_one_sentence():
    with pytest.raises(HoloError, match=r"^stages\.mindiff\.bandwidth must be greater than 0, got -0\.1\.$"):
        override(TrainConfig(), ["stages=mindiff", "stages.mindiff.bandwidth=-0.1"])
