"""Task heads on top of the decoder: a sequence classifier (used by the fairness work).

The classifier pools the decoder's hidden states (`pooling`: the last real token's, where a causal
model has seen the whole text, or the mean over the real tokens), then applies a linear layer.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from holo_jax.config import ModelConfig
from holo_jax.model.transformer import Decoder


class SequenceClassifier(nn.Module):
    """Returns float32 logits `[b, num_classes]` and a dict with `pooled`, `hidden`, `attention`."""

    cfg: ModelConfig
    num_classes: int = 2
    capture_attention: bool = False
    pooling: str = "last"  # "last" | "mean" (TaskConfig.pooling)

    @nn.compact
    def __call__(self, tokens_bt: jax.Array, lengths_b: jax.Array, *, deterministic: bool = True):
        hidden_btd, weights = Decoder(self.cfg, self.capture_attention, name="decoder")(
            tokens_bt, deterministic=deterministic
        )
        if self.capture_attention:
            # Gradient handle on the last block's (final-normed) activations, for Grad-CAM.
            hidden_btd = self.perturb("hidden", hidden_btd)
        if self.pooling == "mean":
            real_bt = (jnp.arange(tokens_bt.shape[1])[None, :] < lengths_b[:, None]).astype(jnp.float32)
            summed_bd = jnp.einsum("bt,btd->bd", real_bt, hidden_btd.astype(jnp.float32))
            pooled_bd = (summed_bd / jnp.maximum(real_bt.sum(axis=1, keepdims=True), 1.0)).astype(hidden_btd.dtype)
        else:
            last_b = jnp.clip(lengths_b - 1, 0, tokens_bt.shape[1] - 1)
            pooled_bd = jnp.take_along_axis(hidden_btd, last_b[:, None, None], axis=1)[:, 0]
        logits_bc = nn.Dense(
            self.num_classes, param_dtype=jnp.float32, name="classifier",
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", None)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
        )(pooled_bd).astype(jnp.float32)
        outputs = {"pooled": pooled_bd, "hidden": hidden_btd}
        if weights is not None:
            outputs["attention"] = weights
        return logits_bc, outputs
