"""The step's one reduction rule: every statistic is a `(sum, count)` pair.

A task's loss, its metrics (accuracy, ...) and whatever a stage measures (an adversary's loss, a
counter, a confusion matrix) are returned as `Stat(sum, count)`. Both halves are *added* over
microbatches and over data-parallel replicas — under every `grad_comm` scheme — and divided once,
where the value is read. So a figure cannot depend on the microbatch count, the mesh or how
gradients travel (the Flax lm1b example's `(sum, normalizer)` losses, generalised).

`sum` may be any pytree of arrays (a vector of per-group sums, an adversary's gradient sum) as
long as adding two of them is the right combination; `count` is one float32 scalar.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any


class Stat(NamedTuple):
    sum: PyTree
    count: jax.Array

    @classmethod
    def of(cls, values: jax.Array, mask: jax.Array | None = None) -> "Stat":
        """Sum (and number) of `values`, or of those where `mask` is true/nonzero (float32)."""
        values = values.astype(jnp.float32)
        if mask is None:
            return cls(values.sum(), jnp.asarray(values.size, jnp.float32))
        mask = jnp.broadcast_to(mask, values.shape).astype(jnp.float32)
        return cls((values * mask).sum(), mask.sum())

    def mean(self) -> PyTree:
        """sum / count; NaN where count is 0 (no data is not zero)."""
        return jax.tree.map(lambda s: s / self.count, self.sum)


def is_stat(x: Any) -> bool:
    return isinstance(x, Stat)


def safe_divide(total: jax.Array, count: jax.Array) -> jax.Array:
    """`total / count`, and 0 where `count` is 0, with a finite gradient in both cases (a loss term
    over rows that a batch happens not to have, e.g. an identity nobody in it mentions)."""
    nonzero = count > 0
    return jnp.where(nonzero, total / jnp.where(nonzero, count, 1.0), 0.0)


def as_float32(tree: PyTree) -> PyTree:
    """Floating leaves in float32, so sums over many microbatches do not lose precision."""
    return jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def means(tree: PyTree) -> PyTree:
    """Every Stat in `tree` replaced by its mean; other leaves unchanged."""
    return jax.tree.map(lambda x: x.mean() if is_stat(x) else x, tree, is_leaf=is_stat)
