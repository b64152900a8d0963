"""Named configs for `python -m experiments.debias --config NAME`: the classifier every method of a
comparison trains (the baseline as it is; the debiased ones with their stage added on top).

toxicity  (the default) a 2-layer, 128-wide classifier (0.66M parameters) over the shipped subword
          tokenizer (holo_jax/data/toxicity_tokenizer.py: 2,000 BPE pieces fit to the embedded train
          split), trained from scratch on the embedded Dixon-style toxicity set
          (holo_jax/data/embedded_toxicity.py: 7,800 train examples with the planted identity bias),
          1000 steps of 32 examples (about 4 epochs). Run time and figures: BENCHMARKS.md, issue 12.
tiny      the same task at test size: 1 layer x 64 wide, sequence 96, 40 steps (seconds on CPU).
"""
from __future__ import annotations

import dataclasses

from holo_jax.config import CheckpointConfig, DataConfig, LogConfig, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from holo_jax.data import toxicity_tokenizer
from holo_jax.data.embedded_toxicity import EMBEDDED_IDENTITIES
from holo_jax.errors import HoloError


def toxicity() -> TrainConfig:
    return TrainConfig(
        # Over bytes the same model reached overall AUC 0.80-0.83 on the evaluation split, over these
        # pieces ~0.96 (BENCHMARKS.md, issue 12). max_len 96 holds every embedded text whole (the
        # longest is 33 pieces) and every held-out one (95: its words are not the fit's, so they
        # fall back to shorter pieces).
        data=DataConfig(tokenizer=toxicity_tokenizer.NAME),
        model=ModelConfig(vocab_size=toxicity_tokenizer.VOCAB_SIZE, d_model=128, n_layers=2, n_heads=4, d_ff=512,
                          max_len=96),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=30),
        task=TaskConfig(kind="sequence_classification", identities=EMBEDDED_IDENTITIES),
        checkpoint=CheckpointConfig(every_steps=250, keep=2),
        # The bias report scores the whole evaluation set afterwards; the in-loop evaluation is a
        # cheap learning-curve check on a few batches.
        log=LogConfig(eval_every_steps=250, eval_batches=4, tensorboard=False),
        steps=1000,
        global_batch=32,
    )


def tiny() -> TrainConfig:
    cfg = toxicity()
    return dataclasses.replace(
        cfg, model=ModelConfig(vocab_size=cfg.model.vocab_size, d_model=64, n_layers=1, n_heads=4, d_ff=128, max_len=96),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=5), steps=40, global_batch=16,
        checkpoint=CheckpointConfig(every_steps=20, keep=1), log=dataclasses.replace(cfg.log, eval_every_steps=40,
                                                                                     eval_batches=2))


CONFIGS = {"toxicity": toxicity, "tiny": tiny}


def get(name: str) -> TrainConfig:
    if name not in CONFIGS:
        raise HoloError(f"unknown config `{name}`; choose one of: {', '.join(CONFIGS)}.")
    return CONFIGS[name]()
