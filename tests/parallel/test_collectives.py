"""Quantized all-reduce on 8 simulated devices and on 2 processes x 4 devices: equal to the exact
all-reduce within `pmean_error_bound`, bitwise identical on every device; hierarchical likewise."""
import json

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, PartitionSpec as P

from experiments.launch_local import launch
from holo_jax.parallel.collectives import hierarchical_quantized_pmean, quantized_pmean, quantized_psum
from holo_jax.parallel.quantize import Codec
from tests.parallel.reference import hierarchical_bound_violation, pmean_bound_violation, per_device_values

SIZE = 3001  # divides neither the block nor the device count
CODECS = [Codec("int8", 64), Codec("int4", 64), Codec("bf16", 64), Codec("int8", 64, "stochastic")]


def _mesh(shape, names):
    return Mesh(np.asarray(jax.devices()[: int(np.prod(shape))]).reshape(shape), names,
                axis_types=(AxisType.Auto,) * len(names))


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: f"{c.scheme}-{c.rounding}")
def test_quantized_pmean_on_8_devices_is_within_its_bound(codec, require_devices):
    require_devices(8)
    mesh = _mesh((8,), ("d",))
    x = per_device_values(8, SIZE)
    key = jax.random.PRNGKey(0) if codec.needs_key else None

    def per_device(block):
        mean = quantized_pmean(block[0], "d", codec, key=key)
        return mean[None], quantized_psum(block[0], "d", codec, key=key)

    # out_specs P("d") keeps every device's copy of the mean, so we can check they agree.
    copies, total = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("d"), out_specs=(P("d"), P())))(x)
    copies = np.asarray(copies)
    assert copies.shape == (8, SIZE) and np.all(copies == copies[0])
    assert pmean_bound_violation(x, copies[0], codec) <= 0.0
    exact = x.mean(axis=0)
    assert np.abs(copies[0] - exact).max() > 0  # something was really quantized
    assert pmean_bound_violation(x, exact + 0.02 * np.abs(exact).max(), codec) > 0  # the check can fail
    np.testing.assert_allclose(np.asarray(total), copies[0] * 8, rtol=1e-6)


def test_hierarchical_pmean_on_2_hosts_x_4_devices_is_within_its_bound(require_devices):
    require_devices(8)
    codec = Codec("int8", 64)
    mesh = _mesh((2, 4), ("host", "local"))
    x = per_device_values(8, SIZE)
    mean = jax.jit(jax.shard_map(
        lambda block: hierarchical_quantized_pmean(block[0, 0], "local", "host", codec),
        mesh=mesh, in_specs=P("host", "local"), out_specs=P()))(x.reshape(2, 4, SIZE))
    assert hierarchical_bound_violation(x.reshape(2, 4, SIZE), np.asarray(mean), codec) <= 0.0


def test_quantized_pmean_across_2_processes_x_4_devices(capfd):
    """Real gloo collectives between two processes; each prints its verdict as one JSON line."""
    assert launch(2, 4, "tests.parallel._collective_jobs", ["pmean"], timeout=240) == 0
    lines = [json.loads(line.split("] ", 1)[1]) for line in capfd.readouterr().out.splitlines() if "{" in line]
    assert sorted(r["process"] for r in lines) == [0, 1]
    for r in lines:
        assert r["devices"] == 8 and r["processes"] == 2
        assert r["flat_violation"] <= 0.0 and r["hierarchical_violation"] <= 0.0, r
        assert r["flat_max_error"] > 0.0  # int8 really was on the wire
