"""Quantized all-reduce for use inside `jax.shard_map`: two-phase, mean and sum, and hierarchical.

The two phases (the all-to-all reduction of ZeRO++'s qgZ, arXiv:2306.10209 section 3.3, and the
compressed all-reduce of 1-bit Adam, arXiv:2102.02888 section 4.2) on an axis of D devices:

  1. reduce-scatter  every device cuts its vector into D chunks, encodes them (int8 / int4 /
                     bf16, see `quantize.Codec`) and sends chunk j to device j (`all_to_all`);
                     device j decodes the D pieces it received and accumulates them in float32;
  2. all-gather      device j re-encodes its reduced chunk and every device gathers all chunks
                     (`all_gather`) and decodes them.

Only encoded payloads and per-block scales cross the wire, in the same 2(D-1)/D volume as a
ring all-reduce; each value is quantized exactly twice whatever D is (a ring reduce-scatter in
low precision would requantize D-1 times). All devices decode the same gathered bytes, so the
result is bitwise identical on every device — replicas stay in sync.

Error bound of the mean (round to nearest; per block, `e(a) = codec.error_bound(a)` linear in
the block's largest magnitude `a`; `pmean_error_bound` computes it):

    |result - exact mean| <= mean_i e(a_i)  +  e(a_mean + mean_i e(a_i))

with `a_i` device i's block maximum and `a_mean` the exact mean's. With `residuals` (error
feedback, Seide et al. 2014; 1-bit Adam's worker and server errors) each phase adds back what
it dropped on the previous call and returns what it dropped now, so over many calls the sum of
results tracks the sum of exact means to within one call's error instead of drifting.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from holo_jax.parallel.quantize import Codec, from_blocks, to_blocks

AxisName = str | tuple[str, ...]


class Residuals(NamedTuple):
    """Error-feedback state of one device for `two_phase_pmean`."""

    sent: jax.Array  # float32 [D, blocks, B]: what encoding this device's own contribution dropped
    owned: jax.Array  # float32 [blocks, B]: what re-encoding the chunk this device reduces dropped


def _device_keys(key: jax.Array | None, axis_name: AxisName) -> tuple[jax.Array | None, jax.Array | None]:
    """Independent rounding streams per device and phase from one (possibly replicated) key."""
    if key is None:
        return None, None
    key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    first, second = jax.random.split(key)
    return first, second


def two_phase_pmean(chunks: jax.Array, axis_name: AxisName, codec: Codec, *, key: jax.Array | None = None,
                    residuals: Residuals | None = None) -> tuple[jax.Array, Residuals | None]:
    """Mean over `axis_name` of `chunks` [D, blocks, block_size] (chunk j is reduced by device j).

    Returns the mean in the same layout, identical on every device, and the updated residuals
    (None without error feedback)."""
    num_devices = jax.lax.axis_size(axis_name)
    if chunks.shape[0] != num_devices or chunks.shape[-1] != codec.block_size:
        raise ValueError(f"chunks must be [{num_devices}, blocks, {codec.block_size}], got {chunks.shape}")
    key_send, key_owned = _device_keys(key, axis_name)

    # Phase 1: encode, exchange chunk j <-> device j, decode and accumulate in float32.
    if residuals is not None:
        chunks = chunks + residuals.sent
    sent = codec.encode(chunks, key_send)
    received = jax.tree.map(lambda a: jax.lax.all_to_all(a, axis_name, 0, 0, tiled=True), sent)
    # A sum of D decoded slices fuses into one elementwise pass; `decode(received).sum(0)`
    # materialises all D decoded float32 chunks first (1.6x slower end to end on CPU).
    decoded = [codec.decode(jax.tree.map(lambda a: a[i], received)) for i in range(num_devices)]
    owned = functools.reduce(jnp.add, decoded) / num_devices  # [blocks, B]

    # Phase 2: re-encode the reduced chunk once and gather every device's.
    if residuals is not None:
        owned = owned + residuals.owned
    reduced = codec.encode(owned, key_owned)
    gathered = jax.tree.map(lambda a: jax.lax.all_gather(a, axis_name, axis=0, tiled=False, to="invarying"), reduced)
    mean = codec.decode(gathered)

    if residuals is None:
        return mean, None
    return mean, Residuals(sent=chunks - codec.decode(sent), owned=owned - codec.decode(reduced))


def quantized_pmean(x: jax.Array, axis_name: AxisName, codec: Codec, *, key: jax.Array | None = None) -> jax.Array:
    """`lax.pmean(x, axis_name)` with encoded payloads on the wire; any shape, any size.

    `x` is padded to whole blocks per device and unpadded again; the result has x's dtype."""
    chunks = to_blocks(x, codec.block_size, jax.lax.axis_size(axis_name))
    mean, _ = two_phase_pmean(chunks, axis_name, codec, key=key)
    return from_blocks(mean, x.shape, x.dtype)


def quantized_psum(x: jax.Array, axis_name: AxisName, codec: Codec, *, key: jax.Array | None = None) -> jax.Array:
    """`lax.psum(x, axis_name)` with encoded payloads on the wire (the mean times the axis size)."""
    total = quantized_pmean(x, axis_name, codec, key=key).astype(jnp.float32) * jax.lax.axis_size(axis_name)
    return total.astype(x.dtype)


def hierarchical_quantized_pmean(x: jax.Array, inner_axis: AxisName, outer_axis: AxisName, codec: Codec, *,
                                 key: jax.Array | None = None) -> jax.Array:
    """Mean over `inner_axis` x `outer_axis`: full precision inside an island, encoded across islands.

    `inner_axis` is the fast one (NVLink inside a host), `outer_axis` the slow one (hosts). The
    inner reduce-scatter leaves each device 1/I of the island's sum, so each device sends only
    1/I of the vector across the slow link, encoded (ZeRO++'s hierarchical qgZ does the
    intra-node step first for the same reason); a full-precision inner all-gather restores it.
    The error bound is that of `two_phase_pmean` applied to the island means."""
    inner = jax.lax.axis_size(inner_axis)
    flat = x.reshape(-1).astype(jnp.float32)
    padded = jnp.pad(flat, (0, -flat.size % inner)).reshape(inner, -1)
    island_mean = jax.lax.psum_scatter(padded, inner_axis, scatter_dimension=0, tiled=False) / inner
    if key is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(inner_axis))
    shard_mean = quantized_pmean(island_mean, outer_axis, codec, key=key)
    full = jax.lax.all_gather(shard_mean, inner_axis, axis=0, tiled=True, to="invarying")
    return full[: flat.size].reshape(x.shape).astype(x.dtype)


def pmean_error_bound(amax_per_device: jax.Array, amax_mean: jax.Array, codec: Codec) -> jax.Array:
    """Per-block bound on |two_phase_pmean - exact mean| of one call without residuals.

    `amax_per_device` [D, ...]: each device's per-block largest magnitude; `amax_mean` [...]:
    the exact mean's. Holds for either rounding (`codec.error_bound` knows which)."""
    phase1 = jnp.mean(codec.error_bound(amax_per_device), axis=0)
    return phase1 + codec.error_bound(amax_mean + phase1)

