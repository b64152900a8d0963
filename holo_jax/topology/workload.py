"""What one training step of the GPT in `holo_jax.model.transformer` costs: FLOPs and bytes.

Counted for that model: learned position embeddings, pre-norm blocks with biased LayerNorms,
q/k/v/out projections without bias, a biased GELU MLP, tied or untied output embedding.
Parameters, gradients and AdamW moments are float32 (see `ModelConfig.compute_dtype`).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from holo_jax.config import ModelConfig

F32 = 4
ADAM_MOMENTS = 2


def dtype_bytes(name: str) -> int:
    return jnp.dtype(name).itemsize  # jnp knows bfloat16, plain numpy does not


def layer_params(m: ModelConfig) -> int:
    d, f = m.d_model, m.d_ff
    attention = 4 * d * d  # q, k, v, out
    mlp = 2 * d * f + f + d  # wi, wo and their biases
    return attention + mlp + 4 * d  # two LayerNorms (scale, bias)


def param_count(m: ModelConfig) -> int:
    embeddings = m.padded_vocab * m.d_model + m.max_len * m.d_model
    head = 0 if m.tie_embeddings else m.padded_vocab * m.d_model
    return embeddings + head + m.n_layers * layer_params(m) + 2 * m.d_model


# Remat policies (holo_jax.model.remat) the estimates know exactly. Others are bounded:
# memory as "none" (a policy saves at most everything) and FLOPs as "full" (it recomputes at
# most the whole layer), so the planner never promises more than a policy delivers.
EXACT_REMAT = ("none", "full")


def step_flops(m: ModelConfig, global_batch: int, seq_len: int) -> float:
    """Matmul FLOPs of one step (forward, backward and any recomputation), all devices.

    Per token, a layer's forward pass does 2 FLOPs per weight plus 4*s*d for attention scores
    and values (counted over the full s x s square, as Narayanan et al. 2021 count it, so the
    figures compare with theirs); the logits add 2*d*V. Backward costs twice the forward;
    full remat adds one more forward of the layers (not of the logits).
    """
    d, layers = m.d_model, m.n_layers
    matmul_weights = 4 * d * d + 2 * d * m.d_ff
    layer_fwd = 2 * matmul_weights + 4 * seq_len * d
    logits_fwd = 2 * d * m.padded_vocab
    layer_passes = 3 if m.remat == "none" else 4
    return float(global_batch * seq_len * (layer_passes * layers * layer_fwd + 3 * logits_fwd))


@dataclasses.dataclass(frozen=True)
class Memory:
    """Bytes per device at the peak of a step."""

    params: float
    grads: float
    optimizer: float
    gathered_params: float  # FSDP: full layers all-gathered for compute, two in flight
    activations: float
    # Quantized gradient communication: residuals, wire buffers and the packed float32 part
    # (holo_jax.topology.grad_wire.quantized_memory_bytes); 0 for the exact fp32 reduction.
    grad_comm: float = 0.0

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.gathered_params + self.activations + self.grad_comm


def activation_bytes_per_layer(m: ModelConfig, tokens: int, tensor: int) -> float:
    """Activations one layer keeps for its backward pass, per device, without remat.

    Accounted tensor by tensor in the manner of Korthikanti et al. 2022 ("Reducing Activation
    Recomputation in Large Transformer Models", section 4): both LayerNorm inputs and outputs
    and the residual input (not split by tensor parallelism), q, k, v and the attention output,
    the MLP hidden layer before and after GELU (split). No s x s score matrix: the model uses
    `jax.nn.dot_product_attention`, cuDNN's fused kernel on GPUs. Dropout masks are 1 byte.
    """
    d, f = m.d_model, m.d_ff
    unsplit = 4 * d
    split = (4 * d + 2 * f) / tensor
    masks = 2 * d if m.dropout > 0 else 0
    return tokens * ((unsplit + split) * dtype_bytes(m.compute_dtype) + masks)


def memory_per_device(
    m: ModelConfig, global_batch: int, seq_len: int, data: int, fsdp: int, tensor: int, microbatches: int
) -> Memory:
    shard = fsdp * tensor
    p = param_count(m)
    microbatch_tokens = global_batch // (data * fsdp) // microbatches * seq_len
    per_layer = activation_bytes_per_layer(m, microbatch_tokens, tensor)
    if m.remat == "full":
        # Each layer keeps its input; the layer being recomputed holds its full set once.
        stored = m.n_layers * microbatch_tokens * m.d_model * dtype_bytes(m.compute_dtype) + per_layer
    else:
        stored = m.n_layers * per_layer
    # float32 logits and their gradient, vocabulary split by the tensor axis.
    logits = 2 * F32 * microbatch_tokens * m.padded_vocab / tensor
    gathered = 2 * layer_params(m) * dtype_bytes(m.compute_dtype) / tensor if fsdp > 1 else 0.0
    return Memory(
        params=F32 * p / shard,
        grads=F32 * p / shard,
        optimizer=ADAM_MOMENTS * F32 * p / shard,
        gathered_params=gathered,
        activations=stored + logits,
    )
