"""A GPT-style decoder in Flax linen: pre-norm blocks, causal attention, GELU MLP.

Conventions:
- Every parameter carries logical axis names (`nn.with_logical_partitioning`) and the main
  activations carry logical constraints; `holo_jax.parallel.rules` maps them to mesh axes.
  Parameter axes (`embed`, `heads`, `mlp`, `vocab`) and activation axes (`act_*`) are named
  apart so FSDP can shard a weight's `embed` dimension without sharding activations by it.
- Array names end in their dimensions: b=batch, t=query position, s=key position, d=model
  width, n=heads, h=head dim, f=MLP width, v=vocabulary, l=layers.
- Projections are tagged with `checkpoint_name` so remat policies can name what to keep.
- Parameters are float32 (master weights); activations and matmuls run in `compute_dtype`.
- Attention uses `jax.nn.dot_product_attention` (cuDNN's fused kernel on GPUs) and, on CPUs,
  `causal_attention`: the same function computed in causal blocks of query rows (see there). The explicit softmax path runs only when attention weights are captured for explanations.
- Only with attention captured does the model carry gradient handles (flax `perturb`) on the
  attention weights and token embeddings, which holo_jax.explain differentiates through.
"""
from __future__ import annotations

import functools

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from holo_jax.config import ModelConfig
from holo_jax.model.remat import remat_policy

Array = jax.Array


def _dense_init(scale: float = 1.0, in_axis: int | tuple[int, ...] = 0):
    """Fan-in scaled normal init; `in_axis` names the contracted dimensions of the kernel."""
    return nn.initializers.variance_scaling(scale, "fan_in", "normal", in_axis=in_axis, out_axis=-1)


def _constrain(x: Array, *axes: str | None) -> Array:
    return nn.with_logical_constraint(x, axes)


def _tokens_matmul(x_btk: Array, w_kn: Array, **kw) -> Array:
    """`[b, t, k] @ [k, n] -> [b, t, n]` as one 2-D GEMM over the flattened (batch, length).

    Why not `einsum("btk,kn->btn")`: for the 3-D form XLA:CPU computes the weight gradient
    `x^T g` through a transposed elementwise fusion (the GELU backward written out column by
    column), which measured 2x slower for the MLP's forward+backward than plain 2-D GEMMs. The
    reshapes are free (the batch sharding stays on the leading dimension) and GPUs see the same
    GEMMs either way."""
    b, t, k = x_btk.shape
    return jnp.matmul(x_btk.reshape(b * t, k), w_kn, **kw).reshape(b, t, w_kn.shape[-1])


# Query rows per block of `causal_attention`. For the bench_step model (sequence 256, head 64) on
# this CPU, one thread, attention forward + backward per layer: 64 rows 38 ms, 128 rows 41 ms,
# against 62 ms for `jax.nn.dot_product_attention` (and its forward again under remat).
ATTENTION_BLOCK = 64


def _query_blocks(t: int, block: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + block, t)) for lo in range(0, t, block)]


def causal_attention(q_btnh: Array, k_bsnh: Array, v_bsnh: Array, block: int = ATTENTION_BLOCK) -> Array:
    """Causal softmax(q k^T / sqrt(h)) v, as `jax.nn.dot_product_attention(..., is_causal=True)`.

    Computed in blocks of `block` query rows, each against only the keys it can see, so the
    scores above the diagonal are never formed (5/8 of the square for 4 blocks) and each block's
    [b, n, block, keys] scores are small enough to stay in cache; the scale is applied to q (t x h
    values) rather than to the scores (t x t). Why: on XLA:CPU `jax.nn.dot_product_attention`
    materialises the whole [b, n, t, t] score tensor several times over in its backward pass (the
    softmax's reductions over 5-D broadcasts); this measured 1.6x faster forward + backward.
    Plain JAX, so autodiff, remat policies and sharding apply as to any other code. Scores and
    softmax are float32 whatever the input dtype; same function to float32 rounding (tests/model)."""
    t, h = q_btnh.shape[1], q_btnh.shape[-1]
    q_bnth = (q_btnh * jnp.asarray(h**-0.5, q_btnh.dtype)).transpose(0, 2, 1, 3)
    k_bnsh, v_bnsh = k_bsnh.transpose(0, 2, 1, 3), v_bsnh.transpose(0, 2, 1, 3)
    outs = []
    for lo, hi in _query_blocks(t, block):
        s_bnts = jnp.einsum("bnth,bnsh->bnts", q_bnth[:, :, lo:hi], k_bnsh[:, :, :hi],
                            preferred_element_type=jnp.float32)
        visible_ts = jnp.arange(hi)[None, :] <= jnp.arange(lo, hi)[:, None]  # row lo + i sees keys 0..lo + i
        s_bnts = jnp.where(visible_ts, s_bnts, -jnp.inf)
        # Softmax written out (the row maximum is a constant of the function: it only shifts).
        e_bnts = jnp.exp(s_bnts - jax.lax.stop_gradient(s_bnts.max(-1, keepdims=True)))
        p_bnts = e_bnts / e_bnts.sum(-1, keepdims=True)
        outs.append(jnp.einsum("bnts,bnsh->bnth", p_bnts.astype(v_bnsh.dtype), v_bnsh[:, :, :hi],
                               preferred_element_type=jnp.float32))
    out_bnth = jnp.concatenate(outs, axis=2) if len(outs) > 1 else outs[0]
    return out_bnth.transpose(0, 2, 1, 3).astype(q_btnh.dtype)


def _attention(q_btnh: Array, k_bsnh: Array, v_bsnh: Array) -> Array:
    """Causal attention by the fastest path of the backend: cuDNN/XLA's on accelerators,
    `causal_attention` on CPUs."""
    if jax.default_backend() == "cpu":
        return causal_attention(q_btnh, k_bsnh, v_bsnh)
    return jax.nn.dot_product_attention(q_btnh, k_bsnh, v_bsnh, is_causal=True)


class LayerNorm(nn.Module):
    """LayerNorm computed in float32 whatever the compute dtype (bf16 variance is too coarse)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (d,))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (d,))
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias
        return y.astype(self.dtype)


class CausalSelfAttention(nn.Module):
    cfg: ModelConfig
    capture_attention: bool = False

    @nn.compact
    def __call__(self, x_btd: Array, *, deterministic: bool) -> tuple[Array, Array | None]:
        cfg = self.cfg
        dtype = jnp.dtype(cfg.compute_dtype)
        n, h = cfg.n_heads, cfg.head_dim

        def proj(name: str) -> Array:
            w_dnh = self.param(name, nn.with_logical_partitioning(_dense_init(), ("embed", "heads", "kv")),
                               (cfg.d_model, n, h))
            y_btnh = _tokens_matmul(x_btd, w_dnh.reshape(cfg.d_model, n * h).astype(dtype)).reshape(
                *x_btd.shape[:2], n, h)
            y_btnh = checkpoint_name(y_btnh, f"{name}_proj")
            return _constrain(y_btnh, "batch", "length", "act_heads", None)

        q_btnh, k_bsnh, v_bsnh = proj("query"), proj("key"), proj("value")
        if self.capture_attention:
            # Explicit weights, needed by the explanation engine; softmax in float32.
            scores_bnts = jnp.einsum("btnh,bsnh->bnts", q_btnh, k_bsnh,
                                     preferred_element_type=jnp.float32) * h**-0.5
            t = x_btd.shape[1]
            causal_ts = jnp.tril(jnp.ones((t, t), dtype=bool))
            scores_bnts = jnp.where(causal_ts, scores_bnts, jnp.finfo(jnp.float32).min)
            weights_bnts = jax.nn.softmax(scores_bnts, axis=-1)
            # A gradient handle for the explanation engine (gradient-weighted attention rollout,
            # Chefer et al. 2021): a no-op unless a `perturbations` collection is passed to apply.
            weights_bnts = self.perturb("attention", weights_bnts)
            out_btnh = jnp.einsum("bnts,bsnh->btnh", weights_bnts.astype(dtype), v_bsnh)
        else:
            weights_bnts = None
            out_btnh = _attention(q_btnh, k_bsnh, v_bsnh)
        out_btnh = checkpoint_name(out_btnh, "attention_out")
        w_nhd = self.param(
            "out",
            # GPT-2's scaled init of residual projections keeps the residual stream's variance flat in depth.
            nn.with_logical_partitioning(_dense_init(1.0 / (2 * cfg.n_layers), in_axis=(0, 1)),
                                         ("heads", "kv", "embed")),
            (n, h, cfg.d_model),
        )
        out_btd = _tokens_matmul(out_btnh.reshape(*out_btnh.shape[:2], n * h),
                                 w_nhd.reshape(n * h, cfg.d_model).astype(dtype))
        out_btd = nn.Dropout(cfg.dropout)(out_btd, deterministic=deterministic)
        return _constrain(out_btd, "batch", "length", "act_embed"), weights_bnts


class Mlp(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_btd: Array, *, deterministic: bool) -> Array:
        cfg = self.cfg
        dtype = jnp.dtype(cfg.compute_dtype)
        b, t, _ = x_btd.shape
        # Dense layers on [b * t, d]: 2-D GEMMs (see _tokens_matmul).
        h_btf = nn.Dense(
            cfg.d_ff, dtype=dtype, param_dtype=jnp.float32, name="wi",
            kernel_init=nn.with_logical_partitioning(_dense_init(), ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
        )(x_btd.reshape(b * t, cfg.d_model)).reshape(b, t, cfg.d_ff)
        h_btf = checkpoint_name(h_btf, "mlp_hidden")
        h_btf = _constrain(nn.gelu(h_btf), "batch", "length", "act_mlp")
        out_btd = nn.Dense(
            cfg.d_model, dtype=dtype, param_dtype=jnp.float32, name="wo",
            kernel_init=nn.with_logical_partitioning(_dense_init(1.0 / (2 * cfg.n_layers)), ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        )(h_btf.reshape(b * t, cfg.d_ff)).reshape(b, t, cfg.d_model)
        out_btd = checkpoint_name(out_btd, "mlp_out")
        out_btd = nn.Dropout(cfg.dropout)(out_btd, deterministic=deterministic)
        return _constrain(out_btd, "batch", "length", "act_embed")


class Block(nn.Module):
    """One pre-norm transformer block. Signature fits `nn.scan`: (carry, broadcast) -> (carry, y)."""

    cfg: ModelConfig
    capture_attention: bool = False

    @nn.compact
    def __call__(self, x_btd: Array, deterministic: bool) -> tuple[Array, Array | None]:
        dtype = jnp.dtype(self.cfg.compute_dtype)
        attn_btd, weights_bnts = CausalSelfAttention(self.cfg, self.capture_attention, name="attn")(
            LayerNorm(dtype, name="ln_attn")(x_btd), deterministic=deterministic
        )
        x_btd = x_btd + attn_btd
        x_btd = x_btd + Mlp(self.cfg, name="mlp")(LayerNorm(dtype, name="ln_mlp")(x_btd), deterministic=deterministic)
        return _constrain(x_btd, "batch", "length", "act_embed"), weights_bnts


class GradientProbe(nn.Module):
    """The identity, with a gradient handle: `perturb` adds the `perturbations` collection's value
    (zeros at init) when one is passed to `apply`, so `jax.grad` with respect to it is the gradient
    with respect to this activation (integrated gradients on the token embeddings). Only created
    when `capture_attention` is set: the training model never has one."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return self.perturb("value", x)


class Decoder(nn.Module):
    """Token embedding + the block stack + final norm. Returns hidden states and attention weights
    (`[layers, b, n, t, s]`, or None unless `capture_attention`)."""

    cfg: ModelConfig
    capture_attention: bool = False

    def setup(self):
        cfg = self.cfg
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("vocab", "embed")),
            (cfg.padded_vocab, cfg.d_model),
        )
        self.position_embedding = self.param(
            "position_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=0.01), ("length", "embed")),
            (cfg.max_len, cfg.d_model),
        )
        block = Block
        if cfg.remat != "none":
            # Remat inside the scan body: each layer's backward recomputes what the policy drops.
            block = nn.remat(Block, policy=remat_policy(cfg.remat), prevent_cse=not cfg.scan_layers,
                             static_argnums=(2,))
        if cfg.scan_layers:
            # With attention captured, the per-layer gradient handles stack over layers like the params.
            variable_axes = {"params": 0, **({"perturbations": 0} if self.capture_attention else {})}
            self.blocks = nn.scan(
                block,
                variable_axes=variable_axes,
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,),
                length=cfg.n_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, self.capture_attention, name="blocks")
        else:
            self.blocks = [block(cfg, self.capture_attention, name=f"block_{i}") for i in range(cfg.n_layers)]
        self.ln_final = LayerNorm(jnp.dtype(cfg.compute_dtype))
        if self.capture_attention:
            self.token_embedding_probe = GradientProbe()

    def __call__(self, tokens_bt: Array, *, deterministic: bool = True) -> tuple[Array, Array | None]:
        cfg = self.cfg
        t = tokens_bt.shape[1]
        if t > cfg.max_len:
            raise ValueError(f"sequence length {t} exceeds model.max_len={cfg.max_len}")
        dtype = jnp.dtype(cfg.compute_dtype)
        # Gather from a table whose width is all-gathered first (as FSDP does for every weight it
        # uses): gathering from an fsdp-sharded width yields width-sharded rows that the SPMD
        # partitioner can only reshard to batch-sharded rows by replicating the whole activation.
        table_vd = _constrain(self.embedding, "vocab", None)
        tokens_btd = jnp.take(table_vd, tokens_bt, axis=0)
        if self.capture_attention:
            tokens_btd = self.token_embedding_probe(tokens_btd)
        x_btd = tokens_btd + _constrain(self.position_embedding[:t], None, None)
        x_btd = _constrain(x_btd.astype(dtype), "batch", "length", "act_embed")
        if cfg.scan_layers:
            x_btd, weights_lbnts = self.blocks(x_btd, deterministic)
        else:
            per_layer = []
            for blk in self.blocks:
                x_btd, w = blk(x_btd, deterministic)
                per_layer.append(w)
            weights_lbnts = jnp.stack(per_layer) if self.capture_attention else None
        return self.ln_final(x_btd), weights_lbnts

    def attend_vocab(self, x_btd: Array) -> Array:
        """Tied output projection: logits against the embedding table."""
        dtype = jnp.dtype(self.cfg.compute_dtype)
        # Accumulate in float32: the logits feed a softmax over the whole vocabulary, where bf16's
        # 8-bit mantissa would be lost after the fact.
        return _tokens_matmul(x_btd, self.embedding.astype(dtype).T, preferred_element_type=jnp.float32)


class CausalLM(nn.Module):
    """Decoder + language-model head. Returns float32 logits `[b, t, padded_vocab]` and a dict with
    `hidden` (final-norm states) and, when captured, `attention` (`[layers, b, n, t, s]`)."""

    cfg: ModelConfig
    capture_attention: bool = False

    @nn.compact
    def __call__(self, tokens_bt: Array, *, deterministic: bool = True) -> tuple[Array, dict[str, Array]]:
        cfg = self.cfg
        decoder = Decoder(cfg, self.capture_attention, name="decoder")
        hidden_btd, weights = decoder(tokens_bt, deterministic=deterministic)
        if cfg.tie_embeddings:
            logits_btv = decoder.attend_vocab(hidden_btd)
        else:
            logits_btv = nn.Dense(
                cfg.padded_vocab, dtype=jnp.dtype(cfg.compute_dtype), param_dtype=jnp.float32,
                use_bias=False, name="lm_head",
                dot_general=functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32),
                kernel_init=nn.with_logical_partitioning(_dense_init(), ("embed", "vocab")),
            )(hidden_btd.reshape(-1, cfg.d_model)).reshape(*hidden_btd.shape[:2], cfg.padded_vocab)
        logits_btv = _constrain(logits_btv, "batch", "length", "act_vocab").astype(jnp.float32)
        outputs = {"hidden": hidden_btd}
        if weights is not None:
            outputs["attention"] = weights
        return logits_btv, outputs
