"""Named configs for `python -m experiments.pretrain --config NAME`.

default  (the Quickstart job) a 4-layer, 256-wide byte-level GPT (3.3M parameters) on the embedded
         corpus (CPython's pydoc topics, ~465 KB of English), 300 steps of 16 x 256 tokens.
         Command: python -m experiments.pretrain --workdir runs/default
         Measured here (2 CPU cores, 2026-12-01, one CPU device): 10.8 minutes saving every
         activation, so about 9 with the remat policy below (from its tokens/s); train loss
         5.99 -> about 2.4 nats/byte, eval loss about 2.15 (the model is still in its early
         "bigram" phase after 1.2M tokens; `--steps 2000` keeps improving it). Remat policy
         `dots_no_batch`: on this CPU it is 22% faster than saving everything (2408 vs 1972
         tokens/s), because the scanned layer stack's saved activations cost more memory
         traffic than recomputing LayerNorm/GELU/softmax; see BENCHMARKS.md, issue 2.
tiny     for tests and smoke runs: 2 layers x 64 wide, sequence 64, batch 8, 40 steps (~20 s on CPU).
         Command: python -m experiments.pretrain --workdir runs/tiny --config tiny
c4_small the same shape as default on TFDS c4/en (prepare it first: `tfds build c4/en`), 5000 steps.
"""
from __future__ import annotations

import dataclasses

from holo_jax.config import (
    CheckpointConfig, DataConfig, LogConfig, ModelConfig, OptimConfig, TrainConfig,
)
from holo_jax.errors import HoloError


def default() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(d_model=256, n_layers=4, n_heads=4, d_ff=1024, max_len=256,
                          remat="dots_no_batch"),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=30),
        checkpoint=CheckpointConfig(every_steps=100, keep=3),
        log=LogConfig(eval_every_steps=100, eval_batches=4),
        steps=300,
        global_batch=16,
    )


def tiny() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(d_model=64, n_layers=2, n_heads=4, d_ff=256, max_len=64),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=5),
        checkpoint=CheckpointConfig(every_steps=10, keep=3),
        log=LogConfig(eval_every_steps=20, eval_batches=2, tensorboard=True),
        steps=40,
        global_batch=8,
    )


def c4_small() -> TrainConfig:
    cfg = default()
    return dataclasses.replace(cfg, data=DataConfig(source="c4"), steps=5000,
                               checkpoint=CheckpointConfig(every_steps=500, keep=3),
                               log=LogConfig(eval_every_steps=500))


CONFIGS = {"default": default, "tiny": tiny, "c4_small": c4_small}


def get(name: str) -> TrainConfig:
    if name not in CONFIGS:
        raise HoloError(f"unknown config `{name}`; choose one of: {', '.join(CONFIGS)}.")
    return CONFIGS[name]()
