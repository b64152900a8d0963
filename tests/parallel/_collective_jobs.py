"""A job tests/parallel/test_collectives.py runs under experiments.launch_local:

    python -m tests.parallel._collective_jobs pmean

joins the processes, builds a (host, local) mesh with one host per process, runs the flat and
the hierarchical quantized mean over real gloo collectives, and prints one JSON line per process
with how far each result is from the stated bound (<= 0: within it).
"""
from __future__ import annotations

import json
import sys

SIZE = 3001


def pmean() -> None:
    from holo_jax.runtime import distributed

    distributed.initialize(timeout_s=60)

    import jax
    import numpy as np
    from jax.experimental import mesh_utils
    from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

    from holo_jax.parallel.collectives import hierarchical_quantized_pmean, quantized_pmean
    from holo_jax.parallel.quantize import Codec
    from tests.parallel.reference import hierarchical_bound_violation, pmean_bound_violation, per_device_values

    local = jax.local_device_count()
    devices = mesh_utils.create_hybrid_device_mesh((1, local), (jax.process_count(), 1), process_is_granule=True)
    mesh = Mesh(devices, ("host", "local"), axis_types=(AxisType.Explicit,) * 2)
    everything = per_device_values(jax.device_count(), SIZE).reshape(jax.process_count(), local, SIZE)
    x = jax.make_array_from_process_local_data(
        NamedSharding(mesh, P("host", "local")), everything[jax.process_index()][None], everything.shape)
    codec = Codec("int8", 64)

    flat = jax.jit(jax.shard_map(lambda b: quantized_pmean(b[0, 0], ("host", "local"), codec),
                                 mesh=mesh, in_specs=P("host", "local"), out_specs=P()))(x)
    hierarchical = jax.jit(jax.shard_map(lambda b: hierarchical_quantized_pmean(b[0, 0], "local", "host", codec),
                                         mesh=mesh, in_specs=P("host", "local"), out_specs=P()))(x)
    flat, hierarchical = np.asarray(flat), np.asarray(hierarchical)
    exact = everything.reshape(-1, SIZE).mean(axis=0)
    print(json.dumps({
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "flat_violation": pmean_bound_violation(everything.reshape(-1, SIZE), flat, codec),
        "flat_max_error": float(np.abs(flat - exact).max()),
        "hierarchical_violation": hierarchical_bound_violation(everything, hierarchical, codec),
    }), flush=True)


if __name__ == "__main__":
    {"pmean": pmean}[sys.argv[1]]()
