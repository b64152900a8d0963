"""The planner on the real compiled train step: memory ordering, choices for synthetic budgets, reuse."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from holo_jax.errors import HoloError
from holo_jax.memory import (
    Candidate, CandidateCost, choose, default_budget, microbatch_options, plan_remat, resolve_budget,
)
from holo_jax.memory.planner import FLOPS_TIE
from holo_jax.model import CausalLM
from holo_jax.train.state import init_train_state
from tests.memory.conftest import BATCH, TINY

POLICIES = ("none", "dots", "full")


def costs_at(compiler, microbatches: int) -> dict[str, CandidateCost]:
    return {p: c for p, c in zip(POLICIES, compiler.costs([Candidate(p, microbatches) for p in POLICIES]))}


def test_memory_ordering_save_nothing_dots_save_everything(tiny_setup):
    compiler, *_ = tiny_setup
    c = costs_at(compiler, 1)
    assert c["full"].peak_bytes <= c["dots"].peak_bytes <= c["none"].peak_bytes
    assert c["full"].peak_bytes < 0.8 * c["none"].peak_bytes  # remat matters in this config
    # Recompute is the price: saving less means more FLOPs.
    assert c["none"].flops <= c["dots"].flops < c["full"].flops
    # The state is the same whatever the policy; only the temporaries change.
    assert len({x.argument_bytes for x in c.values()}) == 1


def test_generous_budget_keeps_every_activation(tiny_setup):
    compiler, *_ = tiny_setup
    none = costs_at(compiler, 1)["none"]
    plan = plan_remat(compiler, none.peak_bytes, policies=POLICIES, microbatches=(1, 2))
    assert plan.chosen.candidate == Candidate("none", 1)
    assert plan.compiled is compiler.compiled(Candidate("none", 1))  # reused, not recompiled
    # Nothing can beat saving everything, so planning compiled nothing else.
    assert [c.candidate for c in plan.costs] == [Candidate("none", 1)]


@pytest.mark.parametrize("budget_from, expected", [("dots", "dots"), ("full", "full")])
def test_tight_budget_takes_the_least_recompute_that_fits(tiny_setup, budget_from, expected):
    compiler, *_ = tiny_setup
    budget = costs_at(compiler, 1)[budget_from].peak_bytes
    plan = plan_remat(compiler, budget, policies=POLICIES, microbatches=(1,))
    assert plan.chosen.candidate == Candidate(expected, 1)
    # Every candidate was weighed, and each one with less recompute than the choice is too big:
    # with a `dots` budget, `full` fits too and loses on FLOPs.
    assert {c.candidate for c in plan.costs} == {Candidate(p, 1) for p in POLICIES}
    cheaper = {c.candidate.policy for c in plan.costs if c.flops < plan.chosen.flops}
    assert cheaper == set(POLICIES[: POLICIES.index(expected)]) and cheaper
    assert all(c.peak_bytes > budget for c in plan.costs if c.candidate.policy in cheaper)


def test_budget_met_only_with_two_microbatches(tiny_setup):
    compiler, *_ = tiny_setup
    one, two = costs_at(compiler, 1), costs_at(compiler, 2)
    budget = one["full"].peak_bytes - 1
    # The construction: nothing fits at one microbatch; at two, `dots` does and `none` does not.
    assert min(c.peak_bytes for c in one.values()) > budget
    assert two["dots"].peak_bytes <= budget < two["none"].peak_bytes
    lines = []
    plan = plan_remat(compiler, budget, policies=POLICIES, microbatches=(1, 2), report=lines.append)
    assert plan.chosen.candidate == Candidate("dots", 2)
    assert {c.candidate for c in plan.costs} == {Candidate(p, m) for p in POLICIES for m in (1, 2)}
    table = lines[0].splitlines()
    assert "chosen: dots x2" in table[0]
    assert len(table) == 2 + len(plan.costs)
    (chosen_row,) = [row for row in table if row.endswith("chosen")]
    assert chosen_row.split()[:2] == ["dots", "2"]


def test_more_microbatches_are_tried_only_where_they_could_beat_the_best_fit(tiny_setup):
    compiler, *_ = tiny_setup
    one, two = costs_at(compiler, 1), costs_at(compiler, 2)
    budget = one["full"].peak_bytes  # at one microbatch only `full` fits...
    assert one["dots"].peak_bytes > budget >= two["dots"].peak_bytes  # ...and `dots` fits at two
    assert two["dots"].flops * (1 + FLOPS_TIE) < one["full"].flops
    plan = plan_remat(compiler, budget, policies=POLICIES, microbatches=(1, 2))
    # Two microbatches of `dots` recompute less than one of `full`: splitting the batch wins.
    assert plan.chosen.candidate == Candidate("dots", 2)
    # `full` already fits at one microbatch and cannot get cheaper with more, so x2 is not compiled.
    compiled = {c.candidate for c in plan.costs}
    assert compiled == {*(Candidate(p, 1) for p in POLICIES), Candidate("none", 2), Candidate("dots", 2)}


def test_nothing_fits_names_the_smallest_footprint(tiny_setup):
    compiler, *_ = tiny_setup
    two = costs_at(compiler, 2)
    assert min(two.values(), key=lambda c: c.peak_bytes) is two["full"]
    with pytest.raises(HoloError, match="smallest footprint found is full x2") as err:
        plan_remat(compiler, two["full"].peak_bytes - 1, policies=POLICIES, microbatches=(1, 2))
    assert f"at least {two['full'].peak_bytes}" in str(err.value)
    with pytest.raises(HoloError, match="train state and batch alone .* fsdp"):
        plan_remat(compiler, two["full"].argument_bytes - 1, policies=POLICIES, microbatches=(1, 2))


def test_chosen_executable_trains_like_the_no_remat_step(tiny_setup):
    compiler, optimizer, inputs = tiny_setup
    state, _ = init_train_state(CausalLM(TINY), inputs, optimizer, (), compiler.mesh)
    tokens = np.random.default_rng(0).integers(0, TINY.vocab_size, (BATCH, TINY.max_len + 1)).astype(np.int32)
    batch = {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:])}
    copy = jax.tree.map(jnp.copy, state)  # each step donates its input state
    with jax.set_mesh(compiler.mesh):
        ref_state, ref_metrics, _ = compiler.compiled(Candidate("none", 1))(state, batch)
        got_state, got_metrics, _ = compiler.compiled(Candidate("full", 2))(copy, batch)
    np.testing.assert_allclose(got_metrics["loss"], ref_metrics["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ref_state.params), jax.tree.leaves(got_state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _cost(policy: str, microbatches: int, peak: int, flops: float) -> CandidateCost:
    return CandidateCost(Candidate(policy, microbatches), argument_bytes=peak, output_bytes=0, alias_bytes=0,
                         temp_bytes=0, host_bytes=0, flops=flops, compile_seconds=0.0)


def test_ties_prefer_fewer_microbatches_then_no_offload():
    near_equal = [_cost("none", 2, 10, 100.0), _cost("dots", 1, 20, 100.5), _cost("offload_qkv", 1, 5, 100.2),
                  _cost("full", 1, 5, 130.0)]
    assert choose(near_equal, budget_bytes=20).candidate == Candidate("dots", 1)
    assert choose(near_equal, budget_bytes=15).candidate == Candidate("offload_qkv", 1)
    assert choose(near_equal, budget_bytes=4) is None


def test_microbatch_options_keep_rows_divisible_by_data_parallel_devices():
    assert microbatch_options(16, 2, start=1, limit=4) == (1, 2, 4)
    assert microbatch_options(16, 4, start=1, limit=8) == (1, 2, 4)  # 8 would leave 2 rows for 4 devices
    assert microbatch_options(12, 1, start=3, limit=4) == (3,)  # start is kept even above the limit


def test_budget_defaults_to_90_percent_of_reported_memory_and_is_required_on_cpu():
    gpu = types.SimpleNamespace(platform="gpu", memory_stats=lambda: {"bytes_limit": 80 * 2**30})
    assert default_budget([gpu, gpu]) == int(0.9 * 80 * 2**30)
    assert resolve_budget(123, jax.devices("cpu")) == 123
    assert default_budget(jax.devices("cpu")) is None
    with pytest.raises(HoloError, match="cpu devices do not report their memory; set one"):
        resolve_budget(0, jax.devices("cpu"))
