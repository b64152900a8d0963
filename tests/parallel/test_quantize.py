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
def test_stochastic_rounding_is_within_the_per_block_bound(scheme):
    codec = Codec(scheme, BLOCK, "stochastic")
    x = jnp.asarray(_blocks_with_varied_scales(seed=1))
    draws = 200
    decoded = jax.jit(jax.vmap(lambda k: codec.decode(codec.encode(x, k))))(jax.random.split(jax.random.PRNGKey(0), draws))
    bound = codec.error_bound(jnp.max(jnp.abs(x), axis=-1, keepdims=True))
    assert bool(jnp.all(jnp.abs(decoded - x) <= bound * (1 + 1e-6)))


def _between_grid_points(scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[2, BLOCK] float32 values x with their neighbouring representable points lo < x < hi
    known exactly, so P(round up) = (x - lo) / (hi - lo) is known exactly too."""
    fractions = np.array([1 / 8, 1 / 4, 1 / 2, 3 / 4, 7 / 8, 0.1, 0.3, 0.9])
    f = np.resize(fractions, (2, BLOCK))
    if scheme == "bf16":
        # bf16 keeps the top 16 of float32's 32 bits: set the dropped 16 bits to f * 2^16.
        top = np.resize(np.arange(0x3F80, 0x3F80 + BLOCK, dtype=np.uint32), (2, BLOCK))
        top[1] |= 0x8000  # negative values: "up" means away from zero
        bits = (top << 16) | (f * 65536).astype(np.uint32)
        x = bits.view(np.float32)
        lo, hi = (top << 16).view(np.float32), ((top + 1) << 16).view(np.float32)
    else:
        # Block maximum qmax / 16 makes the grid step exactly 1/16 and the grid factor exactly 16.
        qmax = {"int8": 127, "int4": 7}[scheme]
        k = np.resize(np.arange(-qmax, qmax - 1), (2, BLOCK)).astype(np.float64)
        x = ((k + f) / 16).astype(np.float32)
        x[:, 0] = qmax / 16
        lo, hi = np.floor(x * 16) / 16, np.floor(x * 16) / 16 + 1 / 16
        lo[:, 0] = hi[:, 0] = x[:, 0]  # the maximum itself is a grid point
        lo, hi = lo.astype(np.float32), hi.astype(np.float32)
    return x, lo, hi


@pytest.mark.parametrize("scheme", SCHEMES)
def test_stochastic_rounding_rounds_up_with_probability_equal_to_the_fraction(scheme):
    """Unbiasedness, tested per value: every draw lands on one of the two neighbouring grid
    points, and the frequency of the upper one matches (x - lo) / (hi - lo) within 5 binomial
    standard deviations; so the mean decoded value converges to x. Round to nearest fails the
    same test, which shows the test can tell a biased rounding from an unbiased one."""
    x, lo, hi = _between_grid_points(scheme)
    exact = lo == hi
    p_up = np.where(exact, 0.0, (x.astype(np.float64) - lo) / np.where(exact, 1.0, hi.astype(np.float64) - lo))
    assert np.all((p_up >= 0) & (p_up < 1))
    draws = 4000
    tolerance = 5 * np.sqrt(p_up * (1 - p_up) / draws) + 1 / draws

    def frequency_up(codec: Codec, keys: jax.Array) -> np.ndarray:
        decoded = np.asarray(jax.jit(jax.vmap(lambda k: codec.decode(codec.encode(jnp.asarray(x), k))))(keys))
        assert np.all((decoded == lo) | (decoded == hi)), "a draw left the two neighbouring grid points"
        return (decoded == hi).mean(axis=0) * ~exact

    stochastic = frequency_up(Codec(scheme, BLOCK, "stochastic"), jax.random.split(jax.random.PRNGKey(0), draws))
    assert np.all(np.abs(stochastic - p_up) <= tolerance), np.abs(stochastic - p_up).max()
    # Pooled over all values, the mean signed error is zero within 5 standard errors.
    step = hi.astype(np.float64) - lo
    signed = ((stochastic - p_up) * step).sum()
    assert abs(signed) <= 5 * np.sqrt((p_up * (1 - p_up) * step**2).sum() / draws)

    nearest = Codec(scheme, BLOCK, "nearest")
    up_nearest = frequency_up(nearest, jnp.zeros((1, 2), jnp.uint32))  # the key is ignored
    assert np.mean(np.abs(up_nearest - p_up) > tolerance) > 0.7  # biased everywhere but f = 1/2


_EXTREMES = [1e-45, 1e-40, 2.0**-126, 1e-37, 1e-36, 1e-30, 1.0, 1e38, float(np.finfo(np.float32).max)]


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_tiny_denormal_and_huge_blocks_stay_within_the_bound(scheme, rounding):
    """Subnormal scales are flushed to zero on XLA:CPU and qmax / amax overflows for tiny blocks;
    the stated bound (with its floor) must hold anyway, and nothing may decode to inf."""
    codec = Codec(scheme, BLOCK, rounding)
    ramp = np.linspace(-1.0, 1.0, BLOCK) * np.where(np.arange(BLOCK) % 3, 1.0, -1.0)
    x = np.stack([(amax * ramp).astype(np.float32) for amax in _EXTREMES])
    x[:, 0] = np.float32(_EXTREMES)  # each block's largest magnitude, exactly
    key = jax.random.PRNGKey(3) if codec.needs_key else None
    decoded = np.asarray(codec.decode(codec.encode(jnp.asarray(x), key)))
    assert np.all(np.isfinite(decoded))
    err = np.abs(decoded.astype(np.float64) - x).max(axis=-1)
    bound = np.asarray(codec.error_bound(jnp.asarray(np.abs(x).max(axis=-1))), np.float64)
    assert np.all(err <= bound * (1 + 1e-6)), dict(zip(_EXTREMES, err / bound))
    # Blocks float32 holds as normal numbers keep their values (the bug decoded 1e-36 to zeros);
    # the error relative to the block maximum stays small from 1e-30 up.
    for amax, row, e in zip(_EXTREMES, decoded, err):
        if amax >= 1e-37:
            assert np.abs(row).max() > 0.5 * amax, amax
        if amax >= 1e-30:
            assert e <= 1.01 * float(codec.error_bound(jnp.float32(amax))) and e <= amax / 6, amax


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
