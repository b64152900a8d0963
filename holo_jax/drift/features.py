"""Per-sequence drift features, computed the same way inside the train step and offline.

Three views of each sequence, each a vector whose *mean over a window* is what a detector compares
with the reference (so the in-step statistic is a plain sum over sequences, which adds up over
microbatches and replicas like every other statistic, holo_jax.train.stats):

  embedding  random Fourier features (Rahimi & Recht 2007) of the sequence's pooled embedding
             (mean of the final-norm hidden states over its tokens, scaled to unit length). With
             phi the RFF map of the Gaussian kernel k(x, y) = exp(-|x - y|^2 / (2 sigma^2)),
             |mean_w phi - mean_ref phi|^2 estimates MMD^2(window, reference) with that kernel
             (Gretton et al. 2012), and the window mean of phi is a sum over sequences. Unit length
             makes the bandwidth model-independent: pooled vectors lie on the unit sphere, whose
             pairwise distances are in [0, 2], so the default sigma = 1 is the sphere's own scale
             and needs no data to choose (a median heuristic would need the reference inside jit).
  loss       the sequence's mean next-token cross-entropy (LM), or the mean entropy of the
             predicted class distribution for a classifier (no labels are needed to monitor).
  tokens     the sequence's token histogram over `buckets` hashed buckets (id mod buckets; exact for
             the byte tokenizer's 256 byte ids when buckets >= 256), normalised to sum to 1.

Nothing here is differentiated: the step's loss never sees these values (the stage returns them
as statistics only, so they are auxiliary outputs of the loss and carry no gradient).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any
FEATURES = ("embedding", "loss", "tokens")


class FeatureMap(NamedTuple):
    """The fixed random projection of the RFF map: omega [d_model, D] ~ N(0, 1), phase [D] ~ U(0, 2 pi)."""

    omega_dk: jax.Array
    phase_k: jax.Array


def init_feature_map(key: jax.Array, d_model: int, num_features: int) -> FeatureMap:
    k1, k2 = jax.random.split(key)
    return FeatureMap(jax.random.normal(k1, (d_model, num_features), jnp.float32),
                      jax.random.uniform(k2, (num_features,), jnp.float32, 0.0, 2.0 * jnp.pi))


def random_fourier_features(x_bd: jax.Array, fmap: FeatureMap, bandwidth: float) -> jax.Array:
    """phi(x) = sqrt(2 / D) cos(x omega / sigma + phase), so phi(x).phi(y) ~ exp(-|x-y|^2 / (2 sigma^2))."""
    num = fmap.omega_dk.shape[1]
    proj_bk = x_bd.astype(jnp.float32) @ fmap.omega_dk / bandwidth + fmap.phase_k
    return jnp.sqrt(2.0 / num) * jnp.cos(proj_bk)


def _unit(x_bd: jax.Array) -> jax.Array:
    return x_bd / jnp.maximum(jnp.linalg.norm(x_bd, axis=-1, keepdims=True), 1e-6)


def sequence_features(task_name: str, outputs: dict, batch: dict, fmap: FeatureMap, bandwidth: float,
                      buckets: int) -> tuple[dict[str, jax.Array], jax.Array]:
    """({feature: [b, k] per-sequence values}, valid [b] float mask) for one batch of `task_name`."""
    # stop_gradient: nothing here is differentiated. optimization_barrier: the compiler may not fuse
    # these reductions with the task's own (a shared fusion reorders the task's float sums, and the
    # logged loss would differ in its last bit from the run without the stage).
    outputs = jax.lax.optimization_barrier(jax.lax.stop_gradient(
        {k: v for k, v in outputs.items() if k in ("hidden", "logits")}))
    hidden_btd = outputs["hidden"].astype(jnp.float32)
    if task_name == "next_token_lm":
        tokens_bt = batch["inputs"]
        real_bt = jnp.ones(tokens_bt.shape, jnp.float32)
        ce_bt = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], batch["targets"])
        loss_b = ce_bt.mean(1)
    elif task_name == "sequence_classification":
        tokens_bt = batch["tokens"]
        real_bt = (jnp.arange(tokens_bt.shape[1])[None, :] < batch["lengths"][:, None]).astype(jnp.float32)
        log_p_bc = jax.nn.log_softmax(outputs["logits"].astype(jnp.float32), axis=-1)
        loss_b = -(jnp.exp(log_p_bc) * log_p_bc).sum(-1)
    else:
        raise ValueError(f"drift features know no task `{task_name}`")
    n_b = jnp.maximum(real_bt.sum(1), 1.0)
    pooled_bd = jnp.einsum("bt,btd->bd", real_bt, hidden_btd) / n_b[:, None]
    embedding_bk = random_fourier_features(_unit(pooled_bd), fmap, bandwidth)
    bucket_bt = tokens_bt % buckets
    b = tokens_bt.shape[0]
    # One scatter-add into [b * buckets]: far cheaper than a one-hot [b, t, buckets] tensor.
    flat = (bucket_bt + jnp.arange(b)[:, None] * buckets).reshape(-1)
    counts_bh = jnp.zeros(b * buckets, jnp.float32).at[flat].add(real_bt.reshape(-1)).reshape(b, buckets)
    tokens_bh = counts_bh / n_b[:, None]
    valid_b = (real_bt.sum(1) > 0).astype(jnp.float32)
    return {"embedding": embedding_bk, "loss": loss_b[:, None], "tokens": tokens_bh}, valid_b
