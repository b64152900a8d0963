"""Sharded == unsharded: the same step on any mesh gives the same loss and updated parameters,
with a stage on (an adversarial probe with its own optimizer, whose term reaches the model)."""
import functools

import jax
import numpy as np
import pytest

from tests.train.helpers import random_batch, run_steps as plain_run_steps
from tests.train.plugin_stages import ProbeConfig, ProbeStage

run_steps = functools.partial(plain_run_steps, stages=(ProbeStage(ProbeConfig(weight=0.5)),))

MESHES = [(8, 1, 1), (2, 2, 2), (1, 4, 2), (2, 1, 4), (1, 8, 1), (1, 2, 4)]


@pytest.fixture(scope="module")
def reference():
    batches = [random_batch(seed=s) for s in range(3)]
    return batches, run_steps((1, 1, 1), batches[:1])[0], run_steps((1, 1, 1), batches)


def _max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_leaves_close(got, want, rtol: float, what: str) -> None:
    """Per leaf, max |got - want| <= rtol * max |want|: a tolerance relative to each leaf's own scale,
    so a leaf of tiny values (Adam's second moment, ~1e-8) is checked as tightly as a large one."""
    flat = jax.tree_util.tree_flatten_with_path(want)[0]
    for (path, w), g in zip(flat, jax.tree.leaves(got)):
        w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        err = float(np.max(np.abs(g - w))) if w.size else 0.0
        assert err <= rtol * scale + 1e-30, f"{what}{jax.tree_util.keystr(path)}: error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape", MESHES)
def test_sharded_step_matches_single_device(mesh_shape, reference, require_devices):
    require_devices(int(np.prod(mesh_shape)))
    batches, ref_first, (ref_state, ref_hist) = reference
    # One step, leaf by leaf: after the first step Adam's moments are exactly (1 - b1) g and
    # (1 - b2) g^2, so they compare every gradient entry (the learning rate is still 0 in warmup:
    # Adam's first update is about lr * sign(g), which would turn round-off in near-zero gradient
    # entries into differences of 2 lr and make later steps incomparable entry by entry).
    first, _ = run_steps(mesh_shape, batches[:1])
    adam, ref_adam = first.opt_state[1][0], ref_first.opt_state[1][0]
    assert_leaves_close(adam.mu, ref_adam.mu, 2e-5, "mu")
    assert_leaves_close(adam.nu, ref_adam.nu, 4e-5, "nu")
    # Three steps: losses and norms stay equal, parameters agree to round-off.
    state, hist = run_steps(mesh_shape, batches)
    for (m, _), (r, _) in zip(hist, ref_hist):
        np.testing.assert_allclose(m["loss"], r["loss"], rtol=2e-6)
        np.testing.assert_allclose(m["probe/loss"], r["probe/loss"], rtol=2e-6)
        np.testing.assert_allclose(m["grad_norm"], r["grad_norm"], rtol=2e-5)
    assert _max_abs_diff(state.params, ref_state.params) < 2e-5
    assert _max_abs_diff(state.opt_state, ref_state.opt_state) < 2e-5
    assert _max_abs_diff(state.stage_states, ref_state.stage_states) < 2e-5


def test_parameters_are_actually_sharded(require_devices):
    """Guards the equivalence test against passing because nothing was sharded."""
    require_devices(8)
    from holo_jax.config import MeshConfig
    from holo_jax.model import CausalLM
    from holo_jax.parallel.mesh import build_mesh
    from holo_jax.train.optimizer import make_optimizer
    from holo_jax.train.state import init_train_state
    from holo_jax.config import OptimConfig
    import jax.numpy as jnp
    from tests.train.helpers import TINY

    mesh = build_mesh(MeshConfig(2, 2, 2), TINY)
    state, _ = init_train_state(CausalLM(TINY), (jnp.zeros((1, 32), jnp.int32),), make_optimizer(OptimConfig(), 10), (), mesh)
    wi = state.params["decoder"]["blocks"]["mlp"]["wi"]["kernel"]  # [layers, embed, mlp]
    assert wi.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert wi.addressable_shards[0].data.shape == (2, 32, 64)
    mu = state.opt_state[1][0].mu["decoder"]["blocks"]["mlp"]["wi"]["kernel"]
    assert mu.sharding.spec == wi.sharding.spec  # optimizer state sharded like its parameter


def test_gradient_accumulation_matches_full_batch():
    batches = [random_batch(seed=s) for s in range(2)]
    full_state, full_hist = run_steps((1, 1, 1), batches)
    acc_state, acc_hist = run_steps((1, 1, 1), batches, microbatches=4)
    for (a, _), (f, _) in zip(acc_hist, full_hist):
        np.testing.assert_allclose(a["loss"], f["loss"], rtol=1e-5)
    assert _max_abs_diff(acc_state.params, full_state.params) < 2e-5


def test_gradient_accumulation_sharded(require_devices):
    require_devices(8)
    batches = [random_batch(rows=16, seed=s) for s in range(2)]
    ref_state, _ = run_steps((1, 1, 1), batches)
    state, _ = run_steps((2, 2, 2), batches, microbatches=2)
    assert _max_abs_diff(state.params, ref_state.params) < 2e-5
