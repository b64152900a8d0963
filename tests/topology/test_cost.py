"""Alpha-beta collectives, link classes per group, and the workload arithmetic."""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from holo_jax.config import ModelConfig
from holo_jax.model.transformer import CausalLM
from holo_jax.topology import workload as wl
from holo_jax.topology.cost import (
    GroupLink, LinkModel, all_gather_s, all_reduce_s, reduce_scatter_s, ring_all_reduce_s, tree_all_reduce_s,
)
from holo_jax.topology.model import replicate
from holo_jax.topology.presets import dgx1_v100, dgx_a100, pcie_8gpu

GB = 1e9


def link(ranks=8, hosts=1, bus=100.0, intra=1e-6, inter=1e-5, base=1e-5) -> GroupLink:
    return GroupLink("nvlink", ranks, hosts, ranks // hosts, bus, intra, inter, base)


def test_ring_and_tree_formulas():
    g = link(ranks=16, hosts=2)
    # nccl-tests' bus bandwidth: an all-reduce moves 2(n-1)/n of the buffer through every rank.
    ring = 1e-5 + 2 * 14 * 1e-6 + 2 * 1 * 1e-5 + 2 * 15 / 16 * GB / (100 * GB)
    assert ring_all_reduce_s(GB, g) == pytest.approx(ring)
    tree = 1e-5 + 2 * (7 * 1e-6 + 1 * 1e-5) + 2 * GB / (0.9 * 100 * GB)
    assert tree_all_reduce_s(GB, g) == pytest.approx(tree)
    assert all_reduce_s(GB, g) == pytest.approx(min(ring, tree))
    assert reduce_scatter_s(GB, g) == all_gather_s(GB, g) == pytest.approx(1e-5 + 14e-6 + 1e-5 + 15 / 16 / 100)


def test_tree_wins_where_ring_latency_dominates():
    many = link(ranks=512, hosts=64, intra=3.4e-6, inter=9.6e-6)  # NCCL's NVLink and network step latencies
    assert all_reduce_s(2**20, many) == tree_all_reduce_s(2**20, many) < ring_all_reduce_s(2**20, many)
    few = link(ranks=16, hosts=2, intra=3.4e-6, inter=9.6e-6)
    assert all_reduce_s(GB, few) == ring_all_reduce_s(GB, few) < tree_all_reduce_s(GB, few)


def test_trivial_collectives_are_free():
    assert all_reduce_s(GB, link(ranks=1)) == reduce_scatter_s(GB, link(ranks=1)) == 0.0
    assert all_reduce_s(0, link()) == 0.0


def test_dgx_a100_link_classes():
    lk = LinkModel(replicate(dgx_a100(), 2))
    nvlink = lk.group(list(range(8)))
    assert (nvlink.kind, nvlink.hosts) == ("nvlink", 1)
    assert nvlink.bus_gbyte == pytest.approx(12 * 25 * 0.78)  # NVSwitch: 12 links per GPU, shared
    assert lk.group([0, 1]).bus_gbyte == pytest.approx(12 * 25 * 0.78)
    everyone = lk.group(list(range(16)))  # NCCL gets all eight 200 Gb/s rails of each host
    assert (everyone.kind, everyone.hosts, everyone.ranks_per_host) == ("network", 2, 8)
    assert everyone.bus_gbyte == pytest.approx(8 * 25 * 0.96)
    one_per_host = lk.group([3, 11])
    assert one_per_host.bus_gbyte == pytest.approx(25 * 0.96)
    assert lk.group([0, 1, 8, 9]).bus_gbyte == pytest.approx(2 * 25 * 0.96)


def test_cube_mesh_groups():
    lk = LinkModel(dgx1_v100())
    assert lk.group([0, 3]).bus_gbyte == pytest.approx(2 * 25 * 0.78)  # NV2 pair
    assert lk.group([0, 1]).bus_gbyte == pytest.approx(1 * 25 * 0.78)  # NV1 pair
    assert lk.group([0, 1, 2, 3]).bus_gbyte == pytest.approx(4 * 25 * 0.78)  # each has 4 links in the quad
    for no_ring in ([0, 5], [0, 1, 5]):  # 0-5 is SYS: a ring must cross PCIe/QPI
        g = lk.group(no_ring)
        assert (g.kind, g.bus_gbyte) == ("pcie", pytest.approx(16 * 0.44))
    assert lk.group(list(range(8))).bus_gbyte == pytest.approx(6 * 25 * 0.78)


def test_shared_nic_is_split_between_gpus():
    lk = LinkModel(replicate(dgx1_v100(), 2))  # 4 EDR NICs, one per GPU pair
    assert lk.group([0, 8]).bus_gbyte == pytest.approx(12.5 * 0.96 / 2)
    lk = LinkModel(replicate(pcie_8gpu(), 2))  # one 100 Gb/s NIC for eight GPUs
    assert lk.group(list(range(16))).bus_gbyte == pytest.approx(12.5 * 0.96)


def test_alike_groups_share_a_key():
    lk = LinkModel(replicate(dgx1_v100(), 2))
    keys = lk.group_keys(np.array([[0, 3], [8, 11], [0, 1], [0, 8]]))
    assert keys[0] == keys[1] and len({keys[0], keys[2], keys[3]}) == 3


def test_hosts_without_nic_rates_cannot_be_priced():
    topo = replicate(dgx_a100(), 2)
    topo = dataclasses.replace(topo, nics=tuple(dataclasses.replace(n, rate_gbit=None) for n in topo.nics))
    with pytest.raises(Exception, match="without a NIC of known rate"):
        LinkModel(topo)


@pytest.mark.parametrize("tie", [True, False])
def test_param_count_matches_the_model(tie):
    cfg = ModelConfig(vocab_size=300, d_model=64, n_layers=3, n_heads=4, d_ff=192, max_len=32, tie_embeddings=tie)
    shapes = jax.eval_shape(CausalLM(cfg).init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    actual = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
    assert wl.param_count(cfg) == actual


def test_step_flops_is_megatron_equation_3():
    # F = 96 B s l h^2 (1 + s / 6h + V / 16lh), which assumes full recomputation.
    cfg = ModelConfig(vocab_size=51200, d_model=3072, n_layers=30, n_heads=32, d_ff=4 * 3072, max_len=2048,
                      remat="full")
    b, s, l, h, v = 512, 2048, 30, 3072, 51200
    assert wl.step_flops(cfg, b, s) == pytest.approx(96 * b * s * l * h**2 * (1 + s / (6 * h) + v / (16 * l * h)))
    no_remat = dataclasses.replace(cfg, remat="none")
    assert wl.step_flops(no_remat, b, s) < wl.step_flops(cfg, b, s)
    assert wl.step_flops(dataclasses.replace(cfg, remat="dots"), b, s) == wl.step_flops(cfg, b, s)  # bounded by full


def test_memory_estimates():
    cfg = ModelConfig(vocab_size=51200, d_model=2048, n_layers=24, n_heads=16, d_ff=8192, max_len=2048,
                      compute_dtype="bfloat16")
    base = wl.memory_per_device(cfg, 64, 2048, 8, 1, 1, 1)
    p = wl.param_count(cfg)
    assert (base.params, base.grads, base.optimizer, base.gathered_params) == (4 * p, 4 * p, 8 * p, 0)
    sharded = wl.memory_per_device(cfg, 64, 2048, 2, 2, 2, 1)
    assert sharded.params == base.params / 4 and sharded.gathered_params > 0
    tokens, logits = 8 * 2048, 2 * 4 * 8 * 2048 * cfg.padded_vocab  # float32 logits and their gradient
    per_layer = wl.activation_bytes_per_layer(cfg, tokens, 1)
    assert base.activations == pytest.approx(24 * per_layer + logits)
    full = wl.memory_per_device(dataclasses.replace(cfg, remat="full"), 64, 2048, 8, 1, 1, 1)
    # Full remat keeps each layer's bf16 input and one layer's working set.
    assert full.activations == pytest.approx(24 * tokens * 2048 * 2 + per_layer + logits)
    halves = wl.memory_per_device(cfg, 64, 2048, 8, 1, 1, 2)
    assert halves.activations == pytest.approx(base.activations / 2)
    bigger_heads = wl.activation_bytes_per_layer(cfg, 2048, 1)
    assert wl.activation_bytes_per_layer(cfg, 2048, 4) < bigger_heads  # tensor parallelism splits part of it
