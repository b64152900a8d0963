"""Blockwise codecs: error within the stated per-block bound, unbiased stochastic rounding,
int4 packing, and padding of sizes that fit neither the block nor the device count."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from holo_jax.parallel.quantize import Codec, from_blocks, pack_int4, to_blocks, unpack_int4

BLOCK = 64
SCHEMES = ["int8", "int4", "bf16"]


def _blocks_with_varied_scales(seed: int = 0) -> np.ndarray:
    """[16, BLOCK] float32: block magnitudes from 1e-6 to 1e3, one outlier block, one all-zero block."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, BLOCK)) * np.logspace(-6, 3, 16)[:, None]
    x[3, 7] = 1e4  # an outlier only coarsens its own block
    x[5] = 0.0
    return x.astype(np.float32)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_round_to_nearest_error_is_within_the_per_block_bound(scheme):
    codec = Codec(scheme, BLOCK, "nearest")
    x = _blocks_with_varied_scales()
    decoded = np.asarray(codec.decode(codec.encode(jnp.asarray(x))))
    err = np.abs(decoded - x).max(axis=-1)
    bound = np.asarray(codec.error_bound(jnp.asarray(np.abs(x).max(axis=-1))))
    assert np.all(err <= bound * (1 + 1e-6)), (err / bound).max()
    assert np.all(decoded[5] == 0.0)  # a zero block stays exactly zero
    # The bound is tight, not vacuous: some block comes within a factor 2 of it.
    assert (err / np.where(bound > 0, bound, 1)).max() > 0.5


@pytest.mark.parametrize("scheme", SCHEMES)
def test_stochastic_rounding_is_within_bound_and_unbiased(scheme):
    codec = Codec(scheme, BLOCK, "stochastic")
    rng = np.random.default_rng(1)
    # Values sitting between representable points, where round-to-nearest is biased.
    x = jnp.asarray((rng.standard_normal((4, BLOCK)) * [[1e-3], [1.0], [10.0], [1e3]]).astype(np.float32))
    draws = 4000
    decoded = jax.jit(jax.vmap(lambda k: codec.decode(codec.encode(x, k))))(jax.random.split(jax.random.PRNGKey(0), draws))
    bound = codec.error_bound(jnp.max(jnp.abs(x), axis=-1, keepdims=True))
    assert bool(jnp.all(jnp.abs(decoded - x) <= bound * (1 + 1e-6)))
    # Each draw's error is within +-bound, so the mean of `draws` is within a few bound/sqrt(draws).
    bias = jnp.abs(decoded.mean(axis=0) - x)
    assert bool(jnp.all(bias <= 5 * bound / np.sqrt(draws))), float((bias / bound).max())
    nearest = Codec(scheme, BLOCK, "nearest")
    nearest_bias = jnp.abs(nearest.decode(nearest.encode(x)) - x)
    assert float(nearest_bias.mean()) > 10 * float(bias.mean())  # what stochastic rounding removes


def test_int4_pack_unpack_round_trip():
    values = np.arange(-7, 8, dtype=np.int8)
    pairs = np.stack(np.meshgrid(values, values), axis=-1).reshape(3, -1)  # every (low, high) pair, [3, 150]
    packed = pack_int4(jnp.asarray(pairs))
    assert packed.dtype == jnp.uint8 and packed.shape == (3, 75)
    np.testing.assert_array_equal(np.asarray(unpack_int4(packed)), pairs)


@pytest.mark.parametrize("scheme, dtype, width, has_scale", [
    ("int8", jnp.int8, BLOCK, True),
    ("int4", jnp.uint8, BLOCK // 2, True),  # two values per byte
    ("bf16", jnp.uint16, BLOCK, False),  # raw bits: XLA:CPU would widen a bfloat16 collective to f32
])
def test_payloads_have_their_wire_width(scheme, dtype, width, has_scale):
    encoded = Codec(scheme, BLOCK).encode(jnp.ones((10, BLOCK)))
    assert encoded.payload.dtype == dtype and encoded.payload.shape == (10, width)
    if has_scale:
        assert encoded.scale.dtype == jnp.float32 and encoded.scale.shape == (10, 1)
    else:
        assert encoded.scale is None


@pytest.mark.parametrize("size, chunks", [(1, 1), (BLOCK - 1, 3), (BLOCK + 1, 2), (1000, 8), (3 * 8 * BLOCK, 8)])
def test_padding_to_whole_blocks_per_chunk_round_trips(size, chunks):
    x = jnp.arange(size, dtype=jnp.float32).reshape(-1, 1) + 1.0
    blocks = to_blocks(x, BLOCK, chunks)
    assert blocks.shape[0] == chunks and blocks.shape[2] == BLOCK
    assert blocks.size - size < chunks * BLOCK  # never more than one block of padding per chunk
    assert float(jnp.abs(blocks).sum()) == float(x.sum())  # the padding is zeros
    restored = from_blocks(blocks, x.shape, jnp.bfloat16)
    assert restored.shape == x.shape and restored.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(restored, np.float32), np.asarray(x.astype(jnp.bfloat16), np.float32))


@pytest.mark.parametrize("kwargs, message", [
    (dict(scheme="int2"), "unknown quantization scheme"),
    (dict(rounding="up"), "unknown rounding"),
    (dict(block_size=63), "even number"),
])
def test_bad_codec_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Codec(**kwargs)


def test_stochastic_rounding_without_a_key_is_refused():
    with pytest.raises(ValueError, match="PRNG key"):
        Codec("int8", BLOCK, "stochastic").encode(jnp.ones((1, BLOCK)))
