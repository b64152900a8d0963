"""Quantized gradient averaging with error feedback, as an optax `GradientTransformation`.

    tx = optax.chain(quantized_gradient_mean("data", Codec("int8")), optax.adamw(1e-3))

used inside `jax.shard_map` over `axis_name` (where every device holds its own gradients),
`tx.update` replaces a `lax.pmean(grads, "data")`: all gradient leaves are packed into one
float32 bucket (one collective pair per step rather than one per leaf, as DDP and DeepSpeed
bucket), averaged with `collectives.two_phase_pmean` and unpacked into the leaves' dtypes.

State (per device, so init and update both run inside the shard_map):
  residuals  what quantization dropped on this device, added back next step (error feedback);
             `None` with `error_feedback=False`;
  rng_key    the stochastic-rounding stream (`None` with round-to-nearest); each device folds in
             its axis index, so roundings are independent across devices.

Non-finite gradients: every device checks its own gradients *before* encoding and the flags are
summed over the axis, or over `finite_axes` when each device holds only a part of the vector
being averaged (a 4-byte all-reduce). If any device saw a NaN/Inf, the result is all-NaN
— as an exact all-reduce's would be — so a caller's finiteness check cannot be fooled by a
codec that clips or a scale that hides the bad value, and the residuals keep their old values
so one bad batch does not poison later steps.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from holo_jax.parallel.collectives import AxisName, Residuals, two_phase_pmean
from holo_jax.parallel.quantize import Codec


class QuantizedGradientMeanState(NamedTuple):
    residuals: Residuals | None  # float32 error-feedback residuals; None without error feedback
    rng_key: jax.Array | None  # raw uint32[2] key for stochastic rounding; None with round-to-nearest


def _bucket_blocks(params: optax.Params, block_size: int, num_devices: int) -> int:
    """Blocks per device chunk of the bucket holding every leaf of `params` (at least one)."""
    size = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    return max(1, math.ceil(size / (block_size * num_devices)))


def quantized_gradient_mean(axis_name: AxisName, codec: Codec, *, error_feedback: bool = True,
                            seed: int = 0, finite_axes: AxisName | None = None) -> optax.GradientTransformation:
    """Average updates over `axis_name` through a quantized two-phase all-reduce.

    `finite_axes` (default `axis_name`): the axes over which devices agree that a step had a
    non-finite gradient; pass every axis whose devices hold parts of the same replica's vector,
    so that all of them keep their residuals when any part is bad."""
    finite_axes = axis_name if finite_axes is None else finite_axes

    def layout(params: optax.Params) -> tuple[int, int]:
        num_devices = jax.lax.axis_size(axis_name)
        return num_devices, _bucket_blocks(params, codec.block_size, num_devices)

    def init(params: optax.Params) -> QuantizedGradientMeanState:
        num_devices, blocks = layout(params)
        residuals = None
        if error_feedback:
            zeros = Residuals(sent=jnp.zeros((num_devices, blocks, codec.block_size), jnp.float32),
                              owned=jnp.zeros((blocks, codec.block_size), jnp.float32))
            # Residuals differ per device from the first update on; typing them as varying over
            # the axis from the start keeps the state's type fixed (e.g. as a `lax.scan` carry).
            residuals = jax.lax.pcast(zeros, axis_name, to="varying")
        rng_key = jax.random.PRNGKey(seed) if codec.needs_key else None
        return QuantizedGradientMeanState(residuals, rng_key)

    def update(updates: optax.Updates, state: QuantizedGradientMeanState, params: optax.Params | None = None
               ) -> tuple[optax.Updates, QuantizedGradientMeanState]:
        del params
        num_devices, blocks = layout(updates)
        leaves, treedef = jax.tree.flatten(updates)
        flat = jnp.concatenate([x.reshape(-1).astype(jnp.float32) for x in leaves])
        locally_bad = jnp.logical_not(jnp.all(jnp.isfinite(flat))).astype(jnp.int32)
        # psum only accepts axes the value varies over; adding 0 * axis_index types the flag as
        # varying over all of `finite_axes` (the compiler folds the zero away).
        locally_bad = locally_bad + 0 * jax.lax.axis_index(finite_axes)
        all_finite = jax.lax.psum(locally_bad, finite_axes) == 0

        # Zero padding to whole blocks per device quantizes exactly and is dropped below.
        padded = num_devices * blocks * codec.block_size
        chunks = jnp.pad(flat, (0, padded - flat.size)).reshape(num_devices, blocks, codec.block_size)
        rng_key, key = jax.random.split(state.rng_key) if codec.needs_key else (None, None)
        mean, residuals = two_phase_pmean(chunks, axis_name, codec, key=key, residuals=state.residuals)
        mean = jnp.where(all_finite, mean, jnp.nan).reshape(-1)
        if residuals is not None:
            residuals = jax.tree.map(lambda new, old: jnp.where(all_finite, new, old), residuals, state.residuals)

        out, offset = [], 0
        for x in leaves:
            out.append(mean[offset:offset + x.size].reshape(x.shape).astype(x.dtype))
            offset += x.size
        return jax.tree.unflatten(treedef, out), QuantizedGradientMeanState(residuals, rng_key)

    return optax.GradientTransformation(init, update)
