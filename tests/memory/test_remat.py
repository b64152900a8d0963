"""The policy registry: names, the `auto` and `default` sentinels, and offload policies on a backend without host offload."""
import jax
import jax.numpy as jnp
import pytest
from jax.ad_checkpoint import print_saved_residuals

from holo_jax.config import ModelConfig
from holo_jax.errors import HoloError
from holo_jax.memory import Candidate, candidate_policies, decision_table
from holo_jax.model.remat import DEFAULT, OFFLOAD_POLICIES, REMAT_POLICIES, offload_is_measurable, remat_policy
from holo_jax.model.transformer import Block


def test_registry_has_the_named_policies_of_issue_4():
    required = {"none", "full", "dots", "dots_no_batch", "save_qkv", "save_attention_out", "minimal"}
    assert required <= set(REMAT_POLICIES)
    assert OFFLOAD_POLICIES and OFFLOAD_POLICIES < set(REMAT_POLICIES)


_QKV = {"query_proj", "key_proj", "value_proj"}
# What each name-based policy keeps for the backward pass of one block. `mlp_out` never shows:
# the residual add's backward does not need it.
SAVED_ON_DEVICE = {"full": set(), "save_qkv": _QKV, "save_attention_out": {"attention_out"},
                   "minimal": _QKV | {"attention_out", "mlp_hidden"}, "offload_qkv": set(), "offload_minimal": set()}
SAVED_ON_HOST = {"offload_qkv": 3, "offload_minimal": 5}


@pytest.mark.parametrize("name", sorted(SAVED_ON_DEVICE))
def test_policies_keep_the_tagged_values_their_names_say(name, capsys):
    cfg = ModelConfig(d_model=32, n_heads=2, d_ff=64, n_layers=1, max_len=8)
    x = jnp.ones((1, 8, 32))
    params = Block(cfg).init(jax.random.key(0), x, True)
    f = jax.checkpoint(lambda p, x: Block(cfg).apply(p, x, True)[0].sum(), policy=REMAT_POLICIES[name])
    print_saved_residuals(f, params, x)
    residuals = capsys.readouterr().out.splitlines()
    inputs = [line for line in residuals if " from the argument " in line]
    named = [line for line in residuals if " named '" in line]
    host = [line for line in residuals if "<host>" in line]
    # A positive signal for every policy, "full" and the offload ones included (whose expected
    # device sets are empty): every residual line is recognised, among them the inputs each
    # checkpointed layer keeps (its weights and x). If print_saved_residuals changed its format,
    # these checks would fail rather than the name sets silently coming out empty.
    assert len(inputs) > 1 and any(line.endswith(" from the argument x") for line in inputs)
    assert len(inputs) + len(named) + len(host) == len(residuals), "unrecognised residuals: " + "\n".join(
        line for line in residuals if line not in inputs + named + host)
    assert {line.split("named '")[1].split("'")[0] for line in named} == SAVED_ON_DEVICE[name]
    assert len(host) == SAVED_ON_HOST.get(name, 0)


def test_auto_and_unknown_names_are_one_clear_error():
    with pytest.raises(HoloError, match="resolved by the trainer's memory planner"):
        remat_policy("auto")
    with pytest.raises(HoloError, match="unknown remat policy `dot`; choose `auto`, `default` or one of: none, full"):
        remat_policy("dot")


def test_default_outside_the_trainer_saves_every_residual_like_none(capsys):
    # The trainer resolves the default (holo_jax.memory.resolve_remat); a model built directly
    # wraps its layers because the name is not "none", and must then recompute nothing.
    assert ModelConfig().remat == DEFAULT
    cfg = ModelConfig(d_model=32, n_heads=2, d_ff=64, n_layers=1, max_len=8)
    x = jnp.ones((1, 8, 32))
    params = Block(cfg).init(jax.random.key(0), x, True)
    g = lambda p, x: Block(cfg).apply(p, x, True)[0].sum()  # noqa: E731

    def saved(f) -> list[str]:
        print_saved_residuals(f, params, x)
        # Scalar literals (constants folded differently under checkpoint) hold no activation memory.
        return [line for line in capsys.readouterr().out.splitlines() if not line.endswith(" from a literal")]

    assert saved(jax.checkpoint(g, policy=remat_policy(DEFAULT))) == saved(g)


def test_offload_policies_compile_on_cpu_but_are_not_planned_there(tiny_setup):
    compiler, *_ = tiny_setup
    devices = list(compiler.mesh.devices.flat)
    assert not offload_is_measurable(devices)
    assert not set(candidate_policies((), devices)) & OFFLOAD_POLICIES
    costs = compiler.costs([Candidate(p, 1) for p in sorted(OFFLOAD_POLICIES)])
    full = compiler.costs([Candidate("full", 1)])[0]
    for cost in costs:
        # Compiled, with real figures; CPU memory is host memory, so nothing lands in "host".
        assert cost.peak_bytes > cost.argument_bytes and cost.flops > 0 and cost.host_bytes == 0
        assert cost.flops < full.flops  # what is offloaded is not recomputed
    table = decision_table(costs, budget_bytes=10**12, chosen=None, offload_measurable=False)
    assert table.count("offload saving needs a GPU to measure") == len(costs)
