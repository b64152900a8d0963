"""The benchmark's GPT as users write it in PyTorch: nanoGPT's model.py, sized by the spec.

Same architecture as `holo_jax.model.CausalLM`: learned token and position embeddings, pre-norm
blocks (LayerNorm with bias, eps 1e-5), causal self-attention with a fused QKV projection and an
output projection (no biases, as holo_jax's attention), `F.scaled_dot_product_attention`, a GELU
(tanh, flax's default) MLP with biases, a final LayerNorm, and logits against the token embedding
(tied). The vocabulary is padded to the spec's `padded_vocab`, as nanoGPT pads 50257 to 50304.
Differences from nanoGPT kept on purpose: no dropout (the spec has none) and no biases on the
attention (holo_jax has none).

`load_holo_init` copies holo_jax's initial parameters (`init.npz`, scanned layers first) into
this layout, so both start from the same weights.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.n_head, self.n_embd = spec.n_heads, spec.d_model
        self.c_attn = nn.Linear(spec.d_model, 3 * spec.d_model, bias=False)
        self.c_proj = nn.Linear(spec.d_model, spec.d_model, bias=False)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.c_fc = nn.Linear(spec.d_model, spec.d_ff)
        self.c_proj = nn.Linear(spec.d_ff, spec.d_model)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.ln_1 = nn.LayerNorm(spec.d_model, eps=spec.layer_norm_eps)
        self.attn = CausalSelfAttention(spec)
        self.ln_2 = nn.LayerNorm(spec.d_model, eps=spec.layer_norm_eps)
        self.mlp = MLP(spec)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, spec):
        super().__init__()
        if not spec.tie_embeddings:
            raise ValueError("the PyTorch GPT of the benchmark ties its embeddings, as the spec's model does")
        self.spec = spec
        self.wte = nn.Embedding(spec.padded_vocab, spec.d_model)
        self.wpe = nn.Embedding(spec.seq_len, spec.d_model)
        self.h = nn.ModuleList([Block(spec) for _ in range(spec.n_layers)])
        self.ln_f = nn.LayerNorm(spec.d_model, eps=spec.layer_norm_eps)
        # nanoGPT's init (overwritten by load_holo_init when the benchmark runs).
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * spec.n_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        logits = F.linear(x, self.wte.weight)  # tied output projection
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def optimizer_groups(model: nn.Module, weight_decay: float, undecayed: tuple[str, ...],
                     check_dims: bool = True) -> list[dict]:
    """AdamW groups: decay every parameter but biases and LayerNorm scales (holo_jax's rule by name;
    nanoGPT's `dim >= 2` rule selects the same set here, checked unless the wrapper has flattened
    the parameters into 1-D shards, as FairScale's FSDP does)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_norm_scale = ".ln_" in f".{name}" and name.endswith(".weight")
        exempt = name.endswith(".bias") or is_norm_scale
        (no_decay if exempt else decay).append(p)
        if check_dims:
            assert exempt == (p.dim() < 2), f"decay rule differs from nanoGPT's for {name}"
    assert set(undecayed) == {"scale", "bias"}
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def load_holo_init(model: GPT, init: dict) -> None:
    """Copy holo_jax's initial parameters (`common.initial_params` layout) into `model`."""
    spec = model.spec
    d = spec.d_model
    t = lambda a: torch.from_numpy(a.copy())  # noqa: E731
    dec = "decoder/"
    blocks = dec + "blocks/"
    with torch.no_grad():
        model.wte.weight.copy_(t(init[dec + "embedding"]))
        model.wpe.weight.copy_(t(init[dec + "position_embedding"]))
        model.ln_f.weight.copy_(t(init[dec + "ln_final/scale"]))
        model.ln_f.bias.copy_(t(init[dec + "ln_final/bias"]))
        for i, block in enumerate(model.h):
            q, k, v = (init[blocks + f"attn/{n}"][i].reshape(d, d) for n in ("query", "key", "value"))
            block.attn.c_attn.weight.copy_(t(__import__("numpy").concatenate([q.T, k.T, v.T], axis=0)))
            block.attn.c_proj.weight.copy_(t(init[blocks + "attn/out"][i].reshape(d, d).T))
            block.ln_1.weight.copy_(t(init[blocks + "ln_attn/scale"][i]))
            block.ln_1.bias.copy_(t(init[blocks + "ln_attn/bias"][i]))
            block.ln_2.weight.copy_(t(init[blocks + "ln_mlp/scale"][i]))
            block.ln_2.bias.copy_(t(init[blocks + "ln_mlp/bias"][i]))
            block.mlp.c_fc.weight.copy_(t(init[blocks + "mlp/wi/kernel"][i].T))
            block.mlp.c_fc.bias.copy_(t(init[blocks + "mlp/wi/bias"][i]))
            block.mlp.c_proj.weight.copy_(t(init[blocks + "mlp/wo/kernel"][i].T))
            block.mlp.c_proj.bias.copy_(t(init[blocks + "mlp/wo/bias"][i]))
    n_holo = sum(a.size for a in init.values())
    n_torch = sum(p.numel() for p in model.parameters())
    if n_holo != n_torch:
        raise AssertionError(f"holo_jax has {n_holo} parameters, the PyTorch GPT {n_torch}")
