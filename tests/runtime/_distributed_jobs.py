"""Tiny jobs that tests/runtime/test_launch_local.py runs under experiments.launch_local.

    python -m tests.runtime._distributed_jobs psum
        join the processes (twice: the second call must be a no-op), sum a global array
        built from per-process data, print one JSON line per process
    python -m tests.runtime._distributed_jobs fail
        process 1 raises once process 0 is inside initialize(), waiting for it
    python -m tests.runtime._distributed_jobs wait-for-sigterm MARKER_DIR
        print "ready", then on SIGTERM take a moment (as a checkpoint would), write
        MARKER_DIR/p<i>.sigterm and exit 0
    python -m tests.runtime._distributed_jobs sleep
        print "ready <pid>" and sleep (ignoring SIGTERM, as a process stuck in a collective
        would), so only SIGKILL ends it
    python -m tests.runtime._distributed_jobs die HOW
        process 1 prints "dying <pid>" and exits with status HOW (a number) or kills itself
        with signal HOW (a name such as SIGKILL); process 0 waits for SIGTERM

jax is imported only by the modes that need it, so the signal tests start fast.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

ROWS_PER_DEVICE = 3


def psum() -> None:
    from holo_jax.runtime import distributed

    cluster = distributed.initialize(timeout_s=60)
    again = distributed.initialize(timeout_s=60)  # must be a no-op returning the same cluster

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import mesh_utils
    from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

    # Group devices by process: CPU devices all report slice_index=0, so processes are the
    # outer ("DCN") granule; the data axis runs over process 0's devices, then process 1's.
    devices = mesh_utils.create_hybrid_device_mesh(
        (jax.local_device_count(),), (jax.process_count(),), process_is_granule=True)
    # Explicit, as jax.make_mesh's meshes are here: shard_map then requires its inputs to
    # carry the in_specs sharding already, which `x` below does.
    mesh = Mesh(devices, ("data",), axis_types=(AxisType.Explicit,))
    # This process holds global rows [first, first + local_rows) of arange(rows * 2).reshape(rows, 2).
    local_rows = jax.local_device_count() * ROWS_PER_DEVICE
    first = jax.process_index() * local_rows
    local = np.arange(first * 2, (first + local_rows) * 2, dtype=np.float32).reshape(local_rows, 2)
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)

    total = jax.jit(jnp.sum)(x)
    psum_total = jax.jit(jax.shard_map(
        lambda block: jax.lax.psum(jnp.sum(block), "data"), mesh=mesh, in_specs=P("data"), out_specs=P()))(x)
    print(json.dumps({
        **distributed.describe(),
        "second_initialize_is_noop": again is cluster,
        "global_shape": list(x.shape),
        "sum": float(total),
        "psum": float(psum_total),
    }), flush=True)


def fail() -> None:
    if os.environ["HOLO_PROCESS_ID"] == "1":
        # The coordinator listens once process 0 is inside initialize(), waiting for us.
        host, port = os.environ["HOLO_COORDINATOR"].rsplit(":", 1)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        raise RuntimeError("process 1 fails on purpose")
    from holo_jax.runtime import distributed

    distributed.initialize(timeout_s=60)  # blocks: process 1 never arrives


def wait_for_sigterm(marker_dir: str) -> None:
    marker = Path(marker_dir) / f"p{os.environ['HOLO_PROCESS_ID']}.sigterm"

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        time.sleep(0.5)  # stands in for saving a checkpoint; the launcher must wait for it
        marker.write_text("saved\n")
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    print("ready", flush=True)
    time.sleep(120)  # the test's SIGTERM comes long before this ends
    raise SystemExit("no SIGTERM arrived")


def sleep() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"ready {os.getpid()}", flush=True)
    time.sleep(120)  # the test kills the launcher long before this ends
    raise SystemExit("nobody killed this process")


def die(how: str) -> None:
    if os.environ["HOLO_PROCESS_ID"] != "1":
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        time.sleep(120)
        raise SystemExit("no SIGTERM arrived")
    print(f"dying {os.getpid()}", flush=True)
    if how.isdigit():
        raise SystemExit(int(how))
    os.kill(os.getpid(), signal.Signals[how])


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    {"psum": psum, "fail": fail, "wait-for-sigterm": wait_for_sigterm, "sleep": sleep, "die": die}[mode](*rest)
