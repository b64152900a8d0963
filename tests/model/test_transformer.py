"""The decoder: shapes, causality, attention capture, remat policies, dtypes, the classifier head."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from holo_jax.config import ModelConfig
from holo_jax.model import CHECKPOINT_NAMES, REMAT_POLICIES, CausalLM, SequenceClassifier

CFG = ModelConfig(d_model=64, n_heads=4, d_ff=128, n_layers=2, max_len=16)
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 258, (2, 16)), jnp.int32)


@pytest.fixture(scope="module")
def params():
    return nn.unbox(CausalLM(CFG).init(jax.random.key(0), TOKENS))["params"]


def test_logits_shape_and_padded_vocab(params):
    logits, out = CausalLM(CFG).apply({"params": params}, TOKENS)
    assert logits.shape == (2, 16, 384) and logits.dtype == jnp.float32
    assert out["hidden"].shape == (2, 16, 64)


def _logical_specs(boxed):
    """(path, names, leaf) per parameter; names is None where the leaf carries no logical axes."""
    flat = jax.tree_util.tree_flatten_with_path(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    return [(jax.tree_util.keystr(path), getattr(x, "names", None), nn.unbox(x)) for path, x in flat]


def test_every_parameter_has_logical_axes():
    boxed = CausalLM(CFG).init(jax.random.key(0), TOKENS)["params"]
    for path, names, leaf in _logical_specs(boxed):
        assert names is not None, f"{path} has no logical axis names"
        assert len(names) == leaf.ndim and any(a is not None for a in names), path


def test_every_classifier_parameter_has_logical_axes():
    boxed = SequenceClassifier(CFG, num_classes=3).init(jax.random.key(0), TOKENS, jnp.array([5, 16]))["params"]
    specs = _logical_specs(boxed)
    assert any("classifier" in path for path, _, _ in specs)
    for path, names, leaf in specs:
        assert names is not None and len(names) == leaf.ndim, f"{path} has no logical axis names"


def test_causal_future_tokens_do_not_change_past_logits(params):
    changed = TOKENS.at[:, 10:].set(7)
    a, _ = CausalLM(CFG).apply({"params": params}, TOKENS)
    b, _ = CausalLM(CFG).apply({"params": params}, changed)
    np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-5)
    assert not np.allclose(a[:, 10:], b[:, 10:])


def test_captured_attention_matches_fused_path(params):
    fused, _ = CausalLM(CFG).apply({"params": params}, TOKENS)
    explicit, out = CausalLM(CFG, capture_attention=True).apply({"params": params}, TOKENS)
    np.testing.assert_allclose(fused, explicit, atol=2e-5)
    w = out["attention"]  # [layers, batch, heads, t, s]
    assert w.shape == (2, 2, 4, 16, 16)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert float(jnp.abs(jnp.triu(w, k=1)).max()) == 0.0  # no weight on future positions


def _checkpoint_tags(jaxpr) -> list[str]:
    """The `checkpoint_name` tags bound in `jaxpr` and every jaxpr nested in it (scan bodies, remat)."""
    tags = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "name":
            tags.append(eqn.params["name"])
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr wraps its Jaxpr
                if hasattr(sub, "eqns"):
                    tags += _checkpoint_tags(sub)
    return tags


@pytest.mark.parametrize("scan_layers, remat", [(True, "none"), (True, "minimal"), (False, "save_qkv")])
def test_the_tags_remat_policies_name_are_the_ones_the_model_puts_on_each_layer(params, scan_layers, remat):
    cfg = dataclasses.replace(CFG, scan_layers=scan_layers, remat=remat)
    p = params if scan_layers else _unscanned(params)
    tags = _checkpoint_tags(jax.make_jaxpr(lambda p: CausalLM(cfg).apply({"params": p}, TOKENS)[0])(p).jaxpr)
    # A scanned stack traces its layer once; unscanned, every layer carries its own tags. A tag
    # renamed in the model, or one added that CHECKPOINT_NAMES (from which the policies are
    # built) does not list, fails here.
    per_layer = 1 if scan_layers else CFG.n_layers
    assert sorted(tags) == sorted(CHECKPOINT_NAMES * per_layer)


@pytest.mark.parametrize("policy", sorted(REMAT_POLICIES))
def test_remat_policies_give_identical_gradients(policy, params):
    def grads(cfg):
        def loss(p):
            logits, _ = CausalLM(cfg).apply({"params": p}, TOKENS)
            return jax.nn.log_softmax(logits).mean()
        return jax.jit(jax.grad(loss))(params)

    ref = grads(CFG)
    got = grads(dataclasses.replace(CFG, remat=policy))
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _unscanned(params):
    """The scanned stack's parameters laid out as one `block_i` per layer."""
    blocks = params["decoder"]["blocks"]
    unscanned = {**params, "decoder": {k: v for k, v in params["decoder"].items() if k != "blocks"}}
    for i in range(CFG.n_layers):
        unscanned["decoder"][f"block_{i}"] = jax.tree.map(lambda x, i=i: x[i], blocks)
    return unscanned


def test_unscanned_layers_compute_the_same_function(params):
    cfg = dataclasses.replace(CFG, scan_layers=False)
    a, _ = CausalLM(CFG).apply({"params": params}, TOKENS)
    b, _ = CausalLM(cfg).apply({"params": _unscanned(params)}, TOKENS)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_untied_embeddings_add_an_output_projection():
    cfg = dataclasses.replace(CFG, tie_embeddings=False)
    p = nn.unbox(CausalLM(cfg).init(jax.random.key(0), TOKENS))["params"]
    assert p["lm_head"]["kernel"].shape == (64, 384)


def test_bfloat16_compute_keeps_float32_master_weights(params):
    cfg = dataclasses.replace(CFG, compute_dtype="bfloat16")
    logits, out = CausalLM(cfg).apply({"params": params}, TOKENS)
    assert out["hidden"].dtype == jnp.bfloat16 and logits.dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    ref, _ = CausalLM(CFG).apply({"params": params}, TOKENS)
    assert float(jnp.abs(jax.nn.softmax(ref) - jax.nn.softmax(logits)).max()) < 0.05
    # The logits matmul accumulates in float32 (not bf16 rounded and then widened): its result
    # has float32 resolution, so values are not all on the bf16 grid.
    assert not np.array_equal(np.asarray(logits), np.asarray(logits.astype(jnp.bfloat16).astype(jnp.float32)))
    _, captured = CausalLM(cfg, capture_attention=True).apply({"params": params}, TOKENS)
    assert captured["attention"].dtype == jnp.float32


def test_sequence_classifier_pools_last_real_token():
    model = SequenceClassifier(CFG, num_classes=3)
    lengths = jnp.array([5, 16])
    p = model.init(jax.random.key(0), TOKENS, lengths)
    logits, out = model.apply(p, TOKENS, lengths)
    assert logits.shape == (2, 3)
    # Tokens after a sequence's length must not change its prediction.
    logits2, _ = model.apply(p, TOKENS.at[0, 5:].set(3), lengths)
    np.testing.assert_allclose(logits[0], logits2[0], atol=1e-5)
