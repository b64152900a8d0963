"""Shared fixtures of the explanation tests: one tiny classifier, trained once per session on a
synthetic set whose label is exactly the presence of one word ("zorp"), and its explanations."""
import dataclasses
import json

import numpy as np
import pytest

from experiments.configs.pretrain import tiny
from holo_jax.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, TaskConfig

KEYWORD = "zorp"
FILLER = ("the", "a", "cat", "dog", "sat", "on", "mat", "red", "blue", "big", "small", "ran", "home", "today",
          "very", "quite", "we", "they", "saw", "green", "tree", "house", "car", "slowly", "fast", "old", "new")
MODEL = ModelConfig(d_model=64, n_heads=4, d_ff=128, n_layers=2, max_len=48)


def keyword_texts(n: int, seed: int) -> list[dict]:
    """4-7 filler words; with probability 1/2 the keyword at a random position; label = keyword present."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        words = [FILLER[i] for i in rng.integers(len(FILLER), size=int(rng.integers(4, 8)))]
        label = int(rng.random() < 0.5)
        if label:
            words.insert(int(rng.integers(len(words) + 1)), KEYWORD)
        rows.append({"text": " ".join(words), "label": label, "identities": []})
    return rows


def write_jsonl(path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def keyword_config(path, steps: int):
    cfg = tiny()
    return dataclasses.replace(
        cfg, model=MODEL, steps=steps, global_batch=32,
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=10),
        task=TaskConfig(kind="sequence_classification"),
        data=DataConfig(source="files", paths=(str(path),)),
        checkpoint=CheckpointConfig(every_steps=steps, keep=1),
        log=dataclasses.replace(cfg.log, eval_every_steps=steps, eval_batches=2, progress_bar=False, plot=False,
                                tensorboard=False))


_TRAINED: dict = {}  # tests/test_explain_cli.py imports these fixtures too: train once per process


@pytest.fixture(scope="session")
def keyword_run(tmp_path_factory):
    """(workdir, eval file): the classifier, and 64 examples it did not train on."""
    from holo_jax.train.loop import train

    if "run" not in _TRAINED:
        root = tmp_path_factory.mktemp("explain_keyword")
        write_jsonl(root / "train.jsonl", keyword_texts(1200, seed=0))
        write_jsonl(root / "eval.jsonl", keyword_texts(64, seed=1))
        train(keyword_config(root / "train.jsonl", 100), root / "run")
        _TRAINED["run"] = (root / "run", root / "eval.jsonl")
    return _TRAINED["run"]


@pytest.fixture(scope="session")
def keyword_classifier(keyword_run):
    from holo_jax.fairness.scoring import load_classifier

    if "classifier" not in _TRAINED:
        _TRAINED["classifier"] = load_classifier(keyword_run[0], batch_size=32)
    return _TRAINED["classifier"]
