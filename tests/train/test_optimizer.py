"""The optimizer: which parameters get weight decay, and the learning-rate schedule."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from holo_jax.config import ModelConfig, OptimConfig
from holo_jax.model import CausalLM, SequenceClassifier
from holo_jax.train.optimizer import learning_rate_schedule, make_optimizer, weight_decay_mask

CFG = ModelConfig(d_model=32, n_heads=4, d_ff=64, n_layers=2, max_len=8)
TOKENS = jnp.zeros((1, 8), jnp.int32)


def _decayed_paths(params) -> dict[str, bool]:
    flat = jax.tree_util.tree_flatten_with_path(weight_decay_mask(params))[0]
    return {jax.tree_util.keystr(path): bool(v) for path, v in flat}


def test_every_weight_matrix_is_decayed_and_no_norm_or_bias_is():
    for model, args in ((CausalLM(CFG), (TOKENS,)), (SequenceClassifier(CFG), (TOKENS, jnp.array([8])))):
        params = nn.unbox(model.init(jax.random.key(0), *args))["params"]
        decayed = _decayed_paths(params)
        for path, is_decayed in decayed.items():
            leaf_name = path.rsplit("'", 2)[-2]
            assert is_decayed == (leaf_name not in ("scale", "bias")), path
        # The attention projections are weights like any other (they were once left out by name).
        for name in ("query", "key", "value", "out"):
            assert any(f"'{name}']" in p and v for p, v in decayed.items()), name


def test_decay_shrinks_weights_but_not_norm_scales():
    params = nn.unbox(CausalLM(CFG).init(jax.random.key(0), TOKENS))["params"]
    opt = make_optimizer(OptimConfig(learning_rate=0.1, warmup_steps=0, weight_decay=0.5), total_steps=10)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zero_grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    blocks, new_blocks = params["decoder"]["blocks"], new["decoder"]["blocks"]
    w, w2 = blocks["attn"]["query"], new_blocks["attn"]["query"]
    np.testing.assert_allclose(w2, w * (1 - 0.1 * 0.5), rtol=1e-6)
    ln = [k for k in blocks if k.startswith("ln")][0]
    np.testing.assert_array_equal(blocks[ln]["scale"], new_blocks[ln]["scale"])


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = OptimConfig(learning_rate=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lr = learning_rate_schedule(cfg, total_steps=100)
    assert float(lr(0)) == 0.0 and abs(float(lr(10)) - 1.0) < 1e-6
    assert abs(float(lr(100)) - 0.1) < 1e-6 and float(lr(50)) < float(lr(20))
