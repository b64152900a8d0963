"""experiments.bench_step: its model-FLOPs formula against a hand count, and its argument checks."""
from __future__ import annotations

import jax
import flax.linen as nn
import jax.numpy as jnp
import pytest

from experiments import bench_step
from holo_jax.config import ModelConfig, TrainConfig
from holo_jax.model import CausalLM

# Wide enough that biases and LayerNorms (which the formula counts, the hand count below does
# not) are under 1% of the matmul weights, and long enough that the position table (which must
# not be counted) would be 7% of them.
D, D_FF, LAYERS, SEQ, BATCH = 128, 512, 2, 256, 4


def _params(model_cfg: ModelConfig):
    model = CausalLM(model_cfg)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, SEQ), jnp.int32)))["params"]
    return nn.unbox(boxed)  # shapes only, as init_train_state holds them (without the axis names)


@pytest.mark.parametrize("tied", [True, False])
def test_flops_per_step_matches_a_hand_count(tied: bool) -> None:
    model_cfg = ModelConfig(vocab_size=256, d_model=D, n_layers=LAYERS, n_heads=4, d_ff=D_FF, max_len=SEQ,
                            tie_embeddings=tied)
    cfg = TrainConfig(model=model_cfg, global_batch=BATCH)
    # Per token: 2 FLOPs per matmul weight forward, 4 backward (PaLM appendix B's 6N), with N the
    # Q/K/V/output (4 d^2) and MLP (2 d d_ff) weights of every layer plus the vocabulary
    # projection (V d, once whether tied or not); attention adds 12 L d T (scores and values,
    # forward and backward over the full T x T square).
    weights = LAYERS * (4 * D * D + 2 * D * D_FF) + model_cfg.padded_vocab * D
    hand = (6 * weights + 12 * LAYERS * D * SEQ) * BATCH * SEQ
    assert bench_step.flops_per_step(cfg, _params(model_cfg)) == pytest.approx(hand, rel=0.01)


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["--repeats", "-3"], "--repeats must be at least 1, got -3"),
    (["--peak-flops", "0"], "--peak-flops must be a positive number"),
    (["--peak-flops", "nan"], "--peak-flops must be a positive number"),
])
def test_bad_arguments_are_one_sentence(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        bench_step.main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
