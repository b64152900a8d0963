"""The drift stage: it changes nothing the step computes, and its sums do not depend on the mesh,
the microbatches or the process layout, and equal the offline scorer's per-sequence features."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from holo_jax.drift import DriftConfig, DriftStage
from holo_jax.drift.features import sequence_features
from holo_jax.train.tasks import NextTokenLM
from tests.train.helpers import TINY, random_batch, run_steps


def _stage(**kw) -> DriftStage:
    stage = DriftStage(DriftConfig(**kw))
    stage.name = "drift"
    stage.bind_task(NextTokenLM())
    return stage


def _batches(n=3, rows=8):
    return [random_batch(rows=rows, seq=TINY.max_len, seed=s) for s in range(n)]


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


LAYOUTS = {"one_device": ((1, 1, 1), 1), "sharded_microbatched": ((2, 2, 2), 2)}


@pytest.fixture(scope="module")
def runs(require_devices_module):
    """{(layout, with_stage): (final state, [(metrics, emitted)])} over the same 2 batches; shared
    by the tests below so each step is compiled once."""
    batches = _batches(2)
    out = {}
    for layout, (mesh_shape, microbatches) in LAYOUTS.items():
        for with_stage in (False, True):
            out[layout, with_stage] = run_steps(mesh_shape, batches, microbatches=microbatches,
                                                stages=(_stage(buckets=256),) if with_stage else ())
    return batches, out


@pytest.fixture(scope="module")
def require_devices_module():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices")


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_stage_changes_no_loss_gradient_or_update_bit_for_bit(runs, layout):
    _, out = runs
    (plain, plain_hist), (drift, drift_hist) = out[layout, False], out[layout, True]
    _leaves_equal(plain.params, drift.params)
    _leaves_equal(plain.opt_state, drift.opt_state)
    for (m0, _), (m1, e1) in zip(plain_hist, drift_hist):
        for key in ("loss", "total_loss", "grad_norm", "param_norm"):
            assert np.asarray(m0[key]).tobytes() == np.asarray(m1[key]).tobytes(), key
        assert set(e1) == {"drift"}  # emitted every step


def test_emitted_sums_do_not_depend_on_mesh_or_microbatches(runs):
    _, out = runs
    for (_, e0), (_, e1) in zip(out["one_device", True][1], out["sharded_microbatched", True][1]):
        assert float(e0["drift"]["count"]) == float(e1["drift"]["count"]) == 8.0
        for t in ("embedding", "loss", "tokens"):
            np.testing.assert_allclose(e0["drift"]["sums"][t], e1["drift"]["sums"][t], rtol=2e-5, atol=2e-5)


def test_emitted_sums_equal_the_per_sequence_features_summed_by_hand(runs):
    """Reference implementation: numpy over the model's outputs. Step 1's emit is computed from
    the initial parameters (the forward pass comes before the update)."""
    batches, out = runs
    batch = batches[0]
    init_state, _ = run_steps((1, 1, 1), [], stages=(_stage(buckets=256),))
    model = NextTokenLM().build_model(TINY)
    logits, outputs = model.apply({"params": init_state.params}, batch["inputs"])
    hidden = np.asarray(outputs["hidden"], np.float64)
    pooled = hidden.mean(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    fmap = init_state.stage_states["drift"]
    phi = np.sqrt(2.0 / 64) * np.cos(pooled @ np.asarray(fmap.omega_dk, np.float64) + np.asarray(fmap.phase_k))
    logp = np.asarray(jax.nn.log_softmax(logits.astype(np.float32)), np.float64)
    ce = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0].mean(1)
    hist_bh = np.stack([np.bincount(r % 256, minlength=256) / len(r) for r in batch["inputs"]])
    emitted = out["one_device", True][1][0][1]["drift"]
    np.testing.assert_allclose(emitted["sums"]["embedding"], phi.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(emitted["sums"]["loss"], [ce.sum()], rtol=1e-5)
    np.testing.assert_allclose(emitted["sums"]["tokens"], hist_bh.sum(0), rtol=1e-6, atol=1e-6)
    # ... and the offline scorer's features are the same function
    feats, valid = sequence_features("next_token_lm", {**outputs, "logits": logits}, batch, fmap, 1.0, 256)
    np.testing.assert_allclose(np.asarray(feats["embedding"]).sum(0), emitted["sums"]["embedding"], rtol=1e-4, atol=1e-4)
    assert float(np.asarray(valid).sum()) == 8.0


def test_bad_settings_are_refused_in_one_sentence():
    from holo_jax.errors import HoloError

    with pytest.raises(HoloError, match="tests must name"):
        DriftConfig(tests=("nope",)).check_relations("stages.drift")
    with pytest.raises(HoloError, match="calibration_windows=20 cannot calibrate .* needs at least 99 windows"):
        DriftConfig(calibration_windows=20, false_alarm_rate=0.01).check_relations("stages.drift")
    with pytest.raises(HoloError, match="reference_windows=20 cannot calibrate .* needs at least 99 windows"):
        DriftConfig(reference_windows=20, false_alarm_rate=0.01, calibration="leave_one_out").check_relations("stages.drift")
    DriftConfig(reference_windows=20, false_alarm_rate=0.01).check_relations("stages.drift")  # prequential: fine

