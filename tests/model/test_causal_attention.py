"""`causal_attention` (the CPU path of the decoder's attention) is jax.nn.dot_product_attention's
function, values and gradients, whatever the block size, a ragged last block, the dtype or the mesh."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from holo_jax.model.transformer import causal_attention


def _qkvg(b: int, t: int, n: int, h: int, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), 4)
    return [jax.random.normal(k, (b, t, n, h), jnp.float32).astype(dtype) for k in keys]


def _value_and_grads(f, q, k, v, g):
    out, pull_back = jax.vjp(f, q, k, v)
    return (out, *pull_back(g))


def _reference(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True)


@pytest.mark.parametrize("t, block", [(16, 64), (16, 4), (37, 8), (64, 16), (64, 64)])
def test_values_and_gradients_equal_dot_product_attention(t: int, block: int) -> None:
    q, k, v, g = _qkvg(2, t, 3, 8)
    got = jax.jit(lambda *a: _value_and_grads(lambda q, k, v: causal_attention(q, k, v, block), *a))(q, k, v, g)
    want = jax.jit(lambda *a: _value_and_grads(_reference, *a))(q, k, v, g)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6, err_msg=name)


def test_no_query_attends_to_a_later_key() -> None:
    q, k, v, _ = _qkvg(1, 24, 2, 4)
    later = v.at[:, 12:].set(100.0)  # changing keys/values from position 12 on
    a = causal_attention(q, k, v, 8)
    b = causal_attention(q, k.at[:, 12:].set(-3.0), later, 8)
    np.testing.assert_array_equal(a[:, :12], b[:, :12])
    assert not np.allclose(a[:, 12:], b[:, 12:])


def test_bfloat16_inputs_keep_their_dtype_and_stay_close() -> None:
    q, k, v, g = _qkvg(2, 32, 2, 16, jnp.bfloat16)
    got = jax.jit(lambda *a: _value_and_grads(lambda q, k, v: causal_attention(q, k, v, 8), *a))(q, k, v, g)
    f32 = [x.astype(jnp.float32) for x in (q, k, v, g)]
    want = jax.jit(lambda *a: _value_and_grads(_reference, *a))(*f32)
    for a, b in zip(got, want):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(a.astype(jnp.float32), b, rtol=0.05, atol=0.05)


def test_sharded_over_batch_and_heads_equals_one_device(require_devices) -> None:
    require_devices(4)
    mesh = jax.make_mesh((2, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2,
                         devices=jax.devices()[:4])
    q, k, v, g = _qkvg(4, 32, 4, 8)
    sharding = NamedSharding(mesh, P("data", None, "tensor", None))
    f = jax.jit(lambda *a: _value_and_grads(lambda q, k, v: causal_attention(q, k, v, 8), *a))
    sharded = f(*(jax.device_put(x, sharding) for x in (q, k, v, g)))
    single = f(q, k, v, g)
    for a, b in zip(sharded, single):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
