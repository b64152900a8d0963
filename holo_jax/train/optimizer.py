"""The optimizer: AdamW with linear warmup, cosine decay and global-norm clipping (optax).

Weight decay applies to every weight matrix (projections, embeddings), not to norms' scales or
biases, as in GPT-2 and most LLM recipes. The mask is decided by parameter *name*, because with
scanned layers a LayerNorm scale is also 2-D (`[layers, d]`). It names what is *exempt*, so that a
new weight (say a stage's projection called `query`) is decayed unless somebody decides otherwise.
"""
from __future__ import annotations

from typing import Any

import jax
import optax

from holo_jax.config import OptimConfig

_UNDECAYED_LEAF_NAMES = ("scale", "bias")


def learning_rate_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=cfg.learning_rate * cfg.min_lr_ratio,
    )


def weight_decay_mask(params: Any) -> Any:
    def decayed(path, _leaf) -> bool:
        last = path[-1]
        name = getattr(last, "key", getattr(last, "name", str(last)))
        return name not in _UNDECAYED_LEAF_NAMES

    return jax.tree_util.tree_map_with_path(decayed, params)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip_norm),
        optax.adamw(
            learning_rate=learning_rate_schedule(cfg, total_steps),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=weight_decay_mask,
        ),
    )
