"""Named rematerialisation policies, applied per scanned layer.

A policy decides which intermediate values of a layer's forward pass are kept for the
backward pass; the rest are recomputed. They are built from `jax.checkpoint_policies` and the
`checkpoint_name` tags the model puts on its projections (see
`holo_jax.model.transformer.CHECKPOINT_NAMES`). A dict, not an if/elif chain, so a policy is
one line and the planner can enumerate them.
"""
from __future__ import annotations

from typing import Callable

import jax

from holo_jax.errors import HoloError

cp = jax.checkpoint_policies

_QKV = ("query_proj", "key_proj", "value_proj")

# name -> policy (None means: no remat at all, every activation is saved).
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,  # save everything: no recomputation
    "full": cp.nothing_saveable,  # save nothing: recompute the whole layer
    "dots": cp.dots_saveable,  # keep matmul outputs, recompute elementwise ops
    "dots_no_batch": cp.dots_with_no_batch_dims_saveable,  # keep only weight matmuls
    "save_qkv": cp.save_only_these_names(*_QKV),
    "save_attention_out": cp.save_only_these_names("attention_out"),
    "minimal": cp.save_only_these_names(*_QKV, "attention_out", "mlp_hidden", "mlp_out"),
}


def remat_policy(name: str) -> Callable | None:
    if name not in REMAT_POLICIES:
        raise HoloError(f"unknown remat policy `{name}`; choose one of: {', '.join(REMAT_POLICIES)}.")
    return REMAT_POLICIES[name]
