"""The decoder's checkpoint tags and the named rematerialisation policies built from them.

The decoder tags its projections with `checkpoint_name(x, tag)`; a policy, applied per scanned
layer, decides which intermediate values of the forward pass are kept for the backward pass and
which are recomputed (or, for the offload variants, parked in pinned host memory and copied
back). The tags and the policies that name them live here together, so a tag cannot be renamed
without the policies seeing it (tests/model checks every name against a traced model). A dict,
not an if/elif chain, so a policy is one line and the planner (`holo_jax.memory`) can enumerate
them.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax

from holo_jax.errors import HoloError

cp = jax.checkpoint_policies

# The `checkpoint_name` tags the decoder puts on its projections (`holo_jax.model.transformer`).
QKV_NAMES = ("query_proj", "key_proj", "value_proj")
CHECKPOINT_NAMES = (*QKV_NAMES, "attention_out", "mlp_hidden", "mlp_out")

# `model.remat` value that asks the trainer to choose a policy with the planner.
AUTO = "auto"
# `model.remat`'s default: the trainer plans (`auto`) where a per-device budget is known and uses
# "none" elsewhere (`holo_jax.memory.resolve_remat`). A model built directly, outside the trainer,
# treats it as "none".
DEFAULT = "default"


def _offload(*names: str) -> Callable:
    """Keep `names` in pinned host memory instead of device memory; recompute everything else."""
    return cp.save_and_offload_only_these_names(
        names_which_can_be_saved=(), names_which_can_be_offloaded=names,
        offload_src="device", offload_dst="pinned_host",
    )


# name -> policy (None means: no remat at all, every activation is saved).
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,  # save everything: no recomputation
    "full": cp.nothing_saveable,  # save nothing: recompute the whole layer
    "dots": cp.dots_saveable,  # keep matmul outputs (attention scores too), recompute elementwise ops
    "dots_no_batch": cp.dots_with_no_batch_dims_saveable,  # keep only weight matmuls
    "save_qkv": cp.save_only_these_names(*QKV_NAMES),
    "save_attention_out": cp.save_only_these_names("attention_out"),
    "minimal": cp.save_only_these_names(*CHECKPOINT_NAMES),  # every named projection
    # Offload variants: the same choices, but the kept values live in host memory.
    "offload_dots_no_batch": cp.offload_dot_with_no_batch_dims("device", "pinned_host"),
    "offload_qkv": _offload(*QKV_NAMES),
    "offload_minimal": _offload(*CHECKPOINT_NAMES),
}

# Policies whose saving is host memory. Where host and device memory are the same RAM (CPU)
# they compile and run, but their figures equal the matching save policy's: no saving shows.
OFFLOAD_POLICIES = frozenset(name for name in REMAT_POLICIES if name.startswith("offload_"))


def remat_policy(name: str) -> Callable | None:
    """The `jax.checkpoint` policy registered under `name` (None for "none")."""
    if name == DEFAULT:
        # Reached only by a model built outside the trainer (which resolves the default first) and
        # that wraps its layers because the name is not "none": keeping every residual recomputes
        # nothing, which is what "none" means.
        return cp.everything_saveable
    if name == AUTO:
        raise HoloError(
            "remat=auto is resolved by the trainer's memory planner before the model is built; "
            "build the model with a concrete policy (holo_jax.memory.plan_remat chooses one)."
        )
    if name not in REMAT_POLICIES:
        raise HoloError(
            f"unknown remat policy `{name}`; choose `{AUTO}`, `{DEFAULT}` or one of: {', '.join(REMAT_POLICIES)}."
        )
    return REMAT_POLICIES[name]


def offload_is_measurable(devices: Sequence[jax.Device]) -> bool:
    """True where pinned host memory is separate from device memory, so offloading saves some.

    A CPU "device" is host RAM: offload policies compile there but change nothing measurable."""
    device = devices[0]
    kinds = {m.kind for m in device.addressable_memories()}
    return device.platform != "cpu" and "pinned_host" in kinds
