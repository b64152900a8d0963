"""`quantized_gradient_mean` as an optax transformation inside shard_map: error feedback keeps the
running sum of applied updates on the sum of true gradients; a NaN on one device cannot hide."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, Mesh, PartitionSpec as P

from holo_jax.parallel.quantized_gradient_mean import quantized_gradient_mean
from holo_jax.parallel.quantize import Codec

DEVICES, STEPS, SMALL = 8, 40, 0.02
CODEC = Codec("int4", 64)


@pytest.fixture
def mesh(require_devices):
    require_devices(DEVICES)
    return Mesh(np.asarray(jax.devices()[:DEVICES]), ("d",), axis_types=(AxisType.Auto,))


def _gradients(seed: int = 0) -> dict[str, np.ndarray]:
    """[STEPS, DEVICES, n] per leaf: one large entry per 64 values and SMALL ones in between —
    int4 rounds the small ones to zero, so without error feedback they are lost every step."""
    rng = np.random.default_rng(seed)
    flat = SMALL + 0.002 * rng.standard_normal((STEPS, DEVICES, 700))
    flat[..., ::64] = 1.0
    return {"a": flat[..., :300].astype(np.float32), "b": flat[..., 300:].reshape(STEPS, DEVICES, 20, 20).astype(np.float32)}


def _run(mesh, grads, error_feedback: bool):
    """Apply the transform STEPS times on every device; returns (sum of applied updates, final state)."""
    tx = quantized_gradient_mean("d", CODEC, error_feedback=error_feedback)

    def per_device(g):
        g = jax.tree.map(lambda x: x[:, 0], g)  # this device's [STEPS, ...]
        state = tx.init(jax.tree.map(lambda x: x[0], g))

        def step(carry, g_t):
            total, state = carry
            update, state = tx.update(g_t, state)
            return (jax.tree.map(jnp.add, total, update), state), None

        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape[1:], x.dtype), g)
        (total, state), _ = jax.lax.scan(step, (zeros, state), g)
        return total, jax.tree.map(lambda x: x[None], state)

    spec = jax.tree.map(lambda _: P(None, "d"), grads)
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(spec,), out_specs=(P(), P("d"))))(grads)


def _flat(tree, leading: int = 0) -> np.ndarray:
    """The leaves 'a' and 'b' concatenated in the transform's bucket order, keeping `leading` dims."""
    return np.concatenate([np.asarray(tree[k]).reshape(*np.shape(tree[k])[:leading], -1) for k in ("a", "b")], -1)


def test_error_feedback_keeps_applied_updates_on_the_sum_of_true_gradients(mesh):
    grads = _gradients()
    true_sum = _flat(grads, leading=2).astype(np.float64).sum(axis=0).mean(axis=0)  # [700]
    applied, state = _run(mesh, grads, error_feedback=True)
    applied_no_ef, _ = _run(mesh, grads, error_feedback=False)
    applied, applied_no_ef = _flat(applied), _flat(applied_no_ef)

    # Exact bookkeeping: what was applied plus what is still held back is what came in.
    # sent[i] holds device i's residual for every chunk; owned[j] device j's reduced chunk.
    held_back = np.asarray(state.residuals.sent).mean(axis=0).reshape(-1)[:700]
    held_back += np.asarray(state.residuals.owned).reshape(-1)[:700]
    np.testing.assert_allclose(applied + held_back, true_sum, atol=1e-4)

    # So the gap never exceeds one step's quantization error (largest magnitude ~1 + residual)...
    gap = np.abs(applied - true_sum).max()
    assert gap <= 2 * float(CODEC.error_bound(1.0 + SMALL * 4)), gap
    # ...while without error feedback the dropped small entries add up step after step.
    assert np.abs(applied_no_ef - true_sum).max() >= 0.5 * STEPS * SMALL > 5 * gap


def test_a_nan_on_one_device_makes_the_mean_nan_everywhere_and_keeps_the_residuals(mesh):
    tx = quantized_gradient_mean("d", Codec("int8", 64))
    g = np.random.default_rng(0).standard_normal((DEVICES, 500)).astype(np.float32)
    g[3, 10] = np.nan  # int8 would clip or zero it: the check must come before encoding

    def per_device(g):
        state = tx.init(g[0])
        _, state = tx.update(jnp.nan_to_num(g[0]) * 0.5, state)  # a finite step leaves residuals
        mean, after = tx.update(g[0], state)
        return mean[None], jax.tree.map(lambda x: x[None], (state, after))

    means, (before, after) = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("d"), out_specs=(P("d"), P("d"))))(g)
    assert np.all(np.isnan(np.asarray(means)))  # on every device, every value
    assert np.abs(np.asarray(before.residuals.sent)).max() > 0
    for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_composes_with_optax_chain_and_keeps_replicas_identical(mesh):
    codec = Codec("int8", 64, "stochastic")
    tx = optax.chain(quantized_gradient_mean("d", codec), optax.sgd(0.5))
    params = {"w": jnp.ones((33, 7)), "b": jnp.zeros((5,), jnp.bfloat16)}
    rng = np.random.default_rng(1)
    g = {"w": rng.standard_normal((DEVICES, 33, 7)).astype(np.float32), "b": rng.standard_normal((DEVICES, 5)).astype(np.float32)}

    def per_device(g):
        state = tx.init(params)
        updates, state = tx.update({"w": g["w"][0], "b": g["b"][0].astype(jnp.bfloat16)}, state)
        return jax.tree.map(lambda x: x[None], optax.apply_updates(params, updates))

    new = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("d"), out_specs=P("d")))(g)
    assert new["b"].dtype == jnp.bfloat16  # leaves keep their dtypes
    for name, copies in new.items():
        copies = np.asarray(copies, np.float32)
        assert np.all(copies == copies[0])  # every replica applies the same update
    expected = np.asarray(params["w"]) - 0.5 * g["w"].mean(axis=0)
    # Two stochastic roundings of values up to max|g|: within 2 e(max|g|), times the learning rate.
    np.testing.assert_allclose(np.asarray(new["w"][0]), expected, atol=0.5 * 2 * float(codec.error_bound(np.abs(g["w"]).max())))
