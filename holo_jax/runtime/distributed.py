"""Join the processes of one job with `jax.distributed`, wherever the job was started.

Every process of a multi-process job calls `initialize()` first thing in `main`, before
anything touches a JAX device. Where the coordinator, process count and process id come from
is `holo_jax.runtime.scheduler_env` (explicit arguments, then HOLO_* variables, then the
scheduler's own; nothing found means a single process and `initialize()` does nothing).

Why we do not simply call `jax.distributed.initialize()` with no arguments: JAX's detectors
read the global `os.environ` at call time, so they can neither be tested on a recorded
environment nor report a cluster without joining it, and they lack several schedulers (see
`scheduler_env`). We pass every value explicitly with `cluster_detection_method="deactivate"`,
so JAX cannot replace a value we resolved with a different guess of its own.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import Literal

import jax

from holo_jax.errors import HoloError
from holo_jax.runtime.scheduler_env import ClusterEnv, resolve_cluster, split_address

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300  # jax.distributed's own default for joining


def _check_coordinator_port(cluster: ClusterEnv) -> None:
    """Raise HoloError if process 0 cannot bind the coordinator port.

    When the port is taken, jaxlib 0.10.2 sometimes raises and sometimes segfaults, so we look
    first. The probe binds where JAX's coordinator binds by default (every address, [::]),
    with SO_REUSEADDR as gRPC does, so only a live socket on the port counts as taken.
    """
    if os.environ.get("JAX_COORDINATOR_BIND_ADDRESS"):
        return  # the user chose the bind address; JAX reports what happens there
    _, port = split_address(cluster.coordinator_address, cluster.source)
    try:
        probe, any_address = socket.socket(socket.AF_INET6, socket.SOCK_STREAM), "::"
    except OSError:  # no IPv6 in this kernel
        probe, any_address = socket.socket(socket.AF_INET, socket.SOCK_STREAM), "0.0.0.0"
    with probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((any_address, port))
        except OSError as e:
            raise HoloError(f"process 0 cannot open the coordinator port {port} ({e.strerror}); "
                            f"pick another port (launch_local --port, or the coordinator address)") from e


_joined: ClusterEnv | None = None  # the cluster this process joined, for describe()


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    cpu_collectives: Literal["gloo", "mpi"] = "gloo",
    timeout_s: int = DEFAULT_TIMEOUT_S,
) -> ClusterEnv | None:
    """Join this process to its job (see the module docstring for where values come from).

    Call it before anything creates JAX devices. Returns the cluster, or None when there is
    none; with no cluster or a one-process cluster this is a no-op. A second call returns
    the first call's cluster (None if JAX was joined directly via jax.distributed).

    A process that cannot reach its peers within `timeout_s` is aborted by JAX's runtime
    (a C++ fatal error, not an exception): check the other processes' logs first.
    """
    global _joined
    if jax.distributed.is_initialized():
        return _joined
    cluster = resolve_cluster(coordinator_address, num_processes, process_id,
                              local_device_ids=local_device_ids)
    if cluster is None or cluster.num_processes == 1:
        return cluster  # no peers to meet: skip the coordinator (and its port) entirely

    # Private, but it is exactly the check jax.distributed.initialize makes; checking first
    # turns its RuntimeError into advice before any configuration changes.
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise HoloError("initialize() ran after JAX had created its devices; call it first thing in main, "
                        "before jax.devices(), any jnp operation or jit")
    if cluster.process_id == 0:
        _check_coordinator_port(cluster)
    # Cross-process computations on the CPU backend need a collectives implementation, and it
    # is fixed when the backend is created. gloo is this jax's default; setting it anyway
    # keeps runs independent of that default and lets a user pick MPI instead.
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    logger.info("joining %d processes as process %d through %s (from %s)", cluster.num_processes,
                cluster.process_id, cluster.coordinator_address, cluster.source)
    try:
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator_address,
            num_processes=cluster.num_processes,
            process_id=cluster.process_id,
            local_device_ids=None if cluster.local_device_ids is None else list(cluster.local_device_ids),
            cluster_detection_method="deactivate",
            initialization_timeout=timeout_s,
        )
    except jax.errors.JaxRuntimeError as e:  # e.g. process 0 cannot bind the coordinator port
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HoloError(f"process {cluster.process_id} could not join {cluster.coordinator_address} "
                        f"({reason}); check that the port is free on process 0's host and reachable "
                        f"from the others") from e
    # Every process must create its devices now: the processes exchange their device lists
    # while starting up, and one that waits lazily stalls the others until they time out.
    jax.devices()
    _joined = cluster
    return cluster


def describe() -> dict[str, int | str]:
    """A small summary of this process's place in the job, for logs and metrics headers."""
    return {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "local_device_count": jax.local_device_count(),
        "device_count": jax.device_count(),
        "platform": jax.default_backend(),
        "cluster": _joined.source if _joined is not None else "single process",
    }
