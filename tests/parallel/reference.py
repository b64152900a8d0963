"""NumPy references for the quantized collectives: the exact mean and the stated error bound,
laid out in blocks exactly as the collectives lay them out."""
from __future__ import annotations

import numpy as np

from holo_jax.parallel.collectives import pmean_error_bound
from holo_jax.parallel.quantize import Codec, to_blocks


def per_device_values(devices: int, size: int, seed: int = 0) -> np.ndarray:
    """[devices, size] float32 with magnitudes varying by device and along the vector."""
    rng = np.random.default_rng(seed)
    scale = np.logspace(-3, 1, size)[None, :] * rng.uniform(0.5, 2.0, (devices, 1))
    return (rng.standard_normal((devices, size)) * scale).astype(np.float32)


def _block_amax(x: np.ndarray, codec: Codec, chunks: int) -> np.ndarray:
    return np.abs(np.asarray(to_blocks(x, codec.block_size, chunks))).max(axis=-1)


def pmean_bound_violation(x: np.ndarray, result: np.ndarray, codec: Codec) -> float:
    """max over blocks of (|result - mean(x)| - bound); <= 0 when `result` is within the bound.

    `x` [devices, size] holds each device's input, `result` [size] the quantized mean."""
    devices = x.shape[0]
    exact = x.astype(np.float64).mean(axis=0).astype(np.float32)
    bound = np.asarray(pmean_error_bound(np.stack([_block_amax(row, codec, devices) for row in x]),
                                         _block_amax(exact, codec, devices), codec))
    err = _block_amax(result - exact, codec, devices)
    return float((err - bound * (1 + 1e-5) - 1e-7).max())


def hierarchical_bound_violation(x: np.ndarray, result: np.ndarray, codec: Codec) -> float:
    """As `pmean_bound_violation` for `hierarchical_quantized_pmean` over x [outer, inner, size]:
    the bound applies to the island means, split into the inner devices' parts."""
    outer, inner, size = x.shape
    islands = x.astype(np.float64).mean(axis=1).astype(np.float32)  # [outer, size]
    parts = np.pad(islands, ((0, 0), (0, -size % inner))).reshape(outer, inner, -1)
    full = np.pad(result, (0, -size % inner)).reshape(inner, -1)
    return max(pmean_bound_violation(parts[:, i], full[i], codec) for i in range(inner))
