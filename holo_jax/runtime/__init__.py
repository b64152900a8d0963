"""Process start-up: where this process sits in a multi-process job (`scheduler_env`, pure
functions of the environment) and joining the job with `jax.distributed` (`distributed`).

Sharding and collectives, which run once the processes have joined, live in
`holo_jax.parallel`.
"""
from __future__ import annotations

import importlib
from typing import Any

from holo_jax.runtime.scheduler_env import (
    HOLO_COORDINATOR, HOLO_K8S_SUBDOMAIN, HOLO_NUM_PROCESSES, HOLO_PROCESS_ID, ClusterEnv, detect_cluster,
    expand_hostlist, resolve_cluster,
)

# `distributed` imports JAX; it is loaded on first use so that the launcher, which only reads
# and writes the HOLO_* variables, starts its children without paying for (or configuring) JAX.
_LAZY = {"distributed": None, "initialize": "initialize", "describe": "describe",
         "DEFAULT_TIMEOUT_S": "DEFAULT_TIMEOUT_S"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module("holo_jax.runtime.distributed")
    return module if _LAZY[name] is None else getattr(module, _LAZY[name])


__all__ = [
    "DEFAULT_TIMEOUT_S", "HOLO_COORDINATOR", "HOLO_K8S_SUBDOMAIN", "HOLO_NUM_PROCESSES", "HOLO_PROCESS_ID",
    "ClusterEnv", "describe", "detect_cluster", "distributed", "expand_hostlist", "initialize",
    "resolve_cluster",
]
