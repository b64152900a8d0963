"""One walk for every HLO cost: loop bodies times their trip count, the condition once more, each
conditional branch as an upper bound, combiners not walked; FLOPs and wire bytes agree on it."""
import math

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AbstractMesh

from holo_jax.hlo import HloFlopsError, collectives, hlo_flops, wire_bytes
from holo_jax.hlo.walk import execution_counts, parse


def _site(prefix: str, k: int, args: str = "") -> str:
    """A k x k matmul and an all-reduce of its result over two devices."""
    return f"""  %{prefix}.a = f32[{k},{k}]{{1,0}} parameter(0){args}
  %{prefix}.d = f32[{k},{k}]{{1,0}} dot(%{prefix}.a, %{prefix}.a), lhs_contracting_dims={{1}}, rhs_contracting_dims={{0}}
  %{prefix}.r = f32[{k},{k}]{{1,0}} all-reduce(%{prefix}.d), channel_id=1, replica_groups={{{{0,1}}}}, to_apply=%add
"""


# Each site is a matmul of a different size, so a count can be read back from either consumer.
# `%add` is the combiner of the all-reduces and of a reduce: if it were walked, its `add` would
# add FLOPs; `%fused` is reached through a fusion, `%called` through a call.
MODULE = f"""HloModule agree

%add (x: f32[], y: f32[]) -> f32[] {{
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}}

%branch0 (p: f32[8,8]) -> f32[8,8] {{
{_site("b0", 8)}  ROOT %b0.out = f32[8,8]{{1,0}} copy(%b0.r)
}}

%branch1 (p: f32[16,16]) -> f32[16,16] {{
{_site("b1", 16)}  ROOT %b1.out = f32[16,16]{{1,0}} copy(%b1.r)
}}

%fused (p: f32[4,4]) -> f32[4,4] {{
  %f.a = f32[4,4]{{1,0}} parameter(0)
  ROOT %f.d = f32[4,4]{{1,0}} dot(%f.a, %f.a), lhs_contracting_dims={{1}}, rhs_contracting_dims={{0}}
}}

%body (t: (s32[], f32[4,4])) -> (s32[], f32[4,4]) {{
  %t = (s32[], f32[4,4]{{1,0}}) parameter(0)
  %body.a = f32[4,4]{{1,0}} get-tuple-element(%t), index=1
  %body.d = f32[4,4]{{1,0}} fusion(%body.a), kind=kOutput, calls=%fused
  %body.r = f32[4,4]{{1,0}} all-reduce(%body.d), channel_id=2, replica_groups={{{{0,1}}}}, to_apply=%add
  %which = s32[] get-tuple-element(%t), index=0
  %branched = f32[8,8]{{1,0}} conditional(%which, %x8, %x16), branch_computations={{%branch0, %branch1}}
  ROOT %next = (s32[], f32[4,4]{{1,0}}) tuple(%which, %body.r)
}}

%condition (t: (s32[], f32[4,4])) -> pred[] {{
{_site("c", 1)}  ROOT %lt = pred[] compare(%i, %n), direction=LT
}}

%called (p: f32[32,32]) -> f32[32,32] {{
{_site("k", 32)}  ROOT %k.out = f32[32,32]{{1,0}} copy(%k.r)
}}

ENTRY %main (p: f32[2,2]) -> f32[] {{
{_site("e", 2)}  %loop = (s32[], f32[4,4]{{1,0}}) while(%init), condition=%condition, body=%body, backend_config={{"known_trip_count":{{"n":"3"}}}}
  %call = f32[32,32]{{1,0}} call(%big), to_apply=%called
  %zero = f32[] constant(0)
  ROOT %total = f32[] reduce(%e.r, %zero), dimensions={{0,1}}, to_apply=%add
}}
"""

# Matrix side of each site -> its runs per program run, by the walk's rule.
RUNS = {2: 1, 32: 1, 4: 3, 1: 3 + 1, 8: 3, 16: 3}  # entry, call, body, condition, both branches
MESH = AbstractMesh((2,), ("data",))


def test_execution_counts_follow_the_one_rule():
    counts = execution_counts(parse(MODULE))
    assert counts == {"main": 1, "called": 1, "body": 3, "fused": 3, "condition": 4, "branch0": 3, "branch1": 3}
    assert "add" not in counts  # a combiner is its instruction's cost, not a computation run


def test_flops_and_wire_bytes_count_every_site_as_often_as_the_walk_says():
    found = collectives(MODULE, MESH)
    # Each f32[k,k] all-reduce, identified by its k, runs as often as its site's matmul.
    assert sorted((math.isqrt(c.result_bytes[0][1] // 4), c.count) for c in found) == sorted(RUNS.items())
    dots = sum(n * 2 * k**3 for k, n in RUNS.items())
    compares, reduce_inputs = RUNS[1] * 1, 2 * 2
    assert hlo_flops(MODULE) == dots + compares + reduce_inputs
    # Two devices: an all-reduce sends 2 (G-1)/G = 1 x its f32[k,k] result.
    assert wire_bytes(found, {"data"}) == sum(n * 4 * k * k for k, n in RUNS.items())


def test_under_a_loop_of_unknown_trip_count_only_what_counts_is_refused():
    unknown = MODULE.replace(', backend_config={"known_trip_count":{"n":"3"}}', "")
    counts = execution_counts(parse(unknown))
    assert {name for name, n in counts.items() if n is None} == {"body", "fused", "condition", "branch0", "branch1"}
    assert counts["main"] == counts["called"] == 1
    with pytest.raises(HloFlopsError, match="no known trip count"):
        hlo_flops(unknown)
    with pytest.raises(ValueError, match="unknown trip count"):
        collectives(unknown, MESH)


def test_a_loop_that_never_runs_its_body_counts_the_condition_once():
    never = MODULE.replace('"n":"3"', '"n":"0"')
    counts = execution_counts(parse(never))
    assert counts["condition"] == 1 and counts["body"] == counts["branch0"] == counts["fused"] == 0
    ran = {(c.result_bytes[0][1], c.count) for c in collectives(never, MESH) if c.count}
    assert ran == {(4 * 2 * 2, 1), (4 * 32 * 32, 1), (4 * 1 * 1, 1)}  # entry, call, condition


def test_compiled_scan_and_cond_are_walked_by_the_same_rule():
    def f(x, p):
        x = jax.lax.cond(p > 0, lambda v: v @ v, lambda v: v + 1.0, x)
        return jax.lax.scan(lambda h, _: (h @ h, None), x, None, length=5)[0]

    module = parse(jax.jit(f).lower(jnp.ones((8, 8)), 1.0).compile().as_text())
    counts = execution_counts(module)
    whiles = [i for c in module.computations.values() for i in c.instructions if i.opcode == "while"]
    conds = [i for c in module.computations.values() for i in c.instructions if i.opcode == "conditional"]
    assert len(whiles) == len(conds) == 1
    body, condition = (whiles[0].attributes.split(f"{key}=%")[1].split(",")[0] for key in ("body", "condition"))
    assert (counts[body], counts[condition]) == (5, 6)
    branches = conds[0].attributes.split("branch_computations={")[1].split("}")[0].replace("%", "").split(", ")
    assert len(branches) == 2 and all(counts[b] == 1 for b in branches)
