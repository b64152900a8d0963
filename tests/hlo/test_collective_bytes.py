"""Reading collectives and their wire bytes from compiled HLO: group formats, loops, attribution."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType, Mesh, PartitionSpec as P

from holo_jax.hlo import collectives, wire_bytes, wire_bytes_by_dtype

# Shaped like XLA's CPU output: a loop body holding an all-reduce, and the three group formats.
MODULE = """HloModule demo

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

%body (p: (s32[], f32[256])) -> (s32[], f32[256]) {
  %p = (s32[], f32[256]{0}) parameter(0)
  %x = f32[256]{0} get-tuple-element(%p), index=1
  %all-reduce.1 = f32[256]{0} all-reduce(%x), channel_id=1, replica_groups=[2,4]<=[8], use_global_device_ids=true, to_apply=%add
  ROOT %t = (s32[], f32[256]{0}) tuple(%i, %all-reduce.1)
}

%cond (p: (s32[], f32[256])) -> pred[] {
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

ENTRY %main (x: f32[256], q: s8[2,512]) -> f32[256] {
  %w = (s32[], f32[256]{0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  %all-to-all = (s8[1,512]{1,0}, s8[1,512]{1,0}) all-to-all(%q0, %q1), channel_id=2, replica_groups={{0,4},{1,5},{2,6},{3,7}}
  %all-gather = u8[1024]{0} all-gather(%q2), channel_id=3, replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_0'}, dimensions={0}
  %cp = f32[64]{0} collective-permute(%y), channel_id=4, source_target_pairs={{0,1},{1,0},{2,2}}
  ROOT %r = f32[256]{0} get-tuple-element(%w), index=1
}
"""


def test_formats_loops_and_attribution_of_a_written_module():
    mesh = AbstractMesh((2, 4), ("data", "inner"))
    found = {c.op: c for c in collectives(MODULE, mesh)}
    reduce = found["all-reduce"]  # iota [2,4]<=[8]: groups {0..3} and {4..7}, along `inner`
    assert reduce.axes == {"inner"} and reduce.group_size == 4 and reduce.count == 3
    assert reduce.wire_bytes == pytest.approx(2 * 3 / 4 * 1024)
    a2a = found["all-to-all"]  # {0,4}: one device per data row
    assert a2a.axes == {"data"} and a2a.dtypes == ("s8", "s8") and a2a.wire_bytes == pytest.approx(0.5 * 1024)
    gather = found["all-gather"]  # named form over axis_0 of a [2,4] grid: across `data`
    assert gather.axes == {"data"} and gather.wire_bytes == pytest.approx(0.5 * 1024)
    assert found["collective-permute"].axes == {"inner"}  # 0 <-> 1; 2 -> 2 moves nothing
    assert wire_bytes(found.values(), {"data"}) == pytest.approx(1024)
    assert wire_bytes_by_dtype(found.values(), {"data"}) == {"s8": 512.0, "u8": 512.0}


def test_a_compiled_reduction_is_attributed_to_its_mesh_axis_whatever_the_device_order(require_devices):
    require_devices(8)
    # A permuted device order: attribution must follow mesh positions, not device ids.
    devices = np.asarray(jax.devices()[:8])[[5, 2, 7, 0, 3, 6, 1, 4]].reshape(2, 2, 2)
    mesh = Mesh(devices, ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    f = jax.jit(jax.shard_map(lambda x: jax.lax.psum(x, "tensor"), mesh=mesh,
                              in_specs=P(("data", "fsdp", "tensor")), out_specs=P(("data", "fsdp"))))
    text = f.lower(jnp.zeros((8, 1000), jnp.float32)).compile().as_text()
    found = [c for c in collectives(text, mesh) if c.op == "all-reduce"]
    assert len(found) == 1 and found[0].axes == {"tensor"} and found[0].group_size == 2
    assert wire_bytes(found, {"tensor"}) == pytest.approx(2 * 1 / 2 * 4000)
    assert wire_bytes(found, {"data", "fsdp"}) == 0
