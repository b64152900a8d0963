"""Tasks: what a batch holds, which model runs, how its outputs become a loss, what eval reports.

The step, the eval step and the loop are built from a task and know none by name (Levanter's
`Trainer(config, optimizer, loss_fn)` idea, with the model and the batch layout included, since a
sharded step must know the batch's shapes before it is compiled). Two ship:

  NextTokenLM             packed text, `{"inputs", "targets"}` [b, t]; causal LM; per-token
                          cross-entropy; eval: loss and perplexity.
  SequenceClassification  `{"tokens" [b, t], "lengths" [b], "label" [b], "identities" [b, k]}`;
                          the decoder pooled at the last real token and a linear head;
                          cross-entropy per example; eval: loss, accuracy and ROC AUC.

A task's `loss` returns its objective term and its statistics as `Stat(sum, count)` pairs (the
step's one reduction rule, holo_jax.train.stats); everything inside runs under jit. `eval_metrics`
runs on the host over the pooled evaluation sums and per-example rows.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from holo_jax.config import ModelConfig, TaskConfig, TrainConfig
from holo_jax.errors import HoloError
from holo_jax.model import CausalLM, SequenceClassifier
from holo_jax.train.roc_auc import roc_auc
from holo_jax.train.stats import Stat

PyTree = Any
Batch = dict[str, jax.Array]


class BatchIterator(Protocol):
    """What `open_batches` returns: numpy batches of this process's rows, with an exact position."""

    def __next__(self) -> dict[str, np.ndarray]: ...

    def state(self) -> dict[str, np.ndarray]:
        """int32 arrays of shape [local rows] (checkpointed as global arrays sharded like the batch)."""

    def restore(self, state: Mapping[str, np.ndarray]) -> None: ...


class Task(Protocol):
    name: str
    # Top-level parameter subtrees that a warm start (`task.init_from`, holo_jax.train.warm_start)
    # restores from a pretraining run; the rest start fresh. Empty: the task has no warm start.
    warm_start_params: tuple[str, ...]

    def build_model(self, model_cfg: ModelConfig) -> nn.Module: ...

    def init_inputs(self, seq_len: int) -> tuple:
        """Positional arguments for `model.init` (shapes only matter)."""

    def example_batch(self, global_batch: int, seq_len: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The global batch's fields: fixes shardings and what is compiled."""

    def apply(self, model: nn.Module, params: PyTree, batch: Batch, *, deterministic: bool,
              rngs: dict | None = None) -> dict[str, jax.Array]:
        """The model's outputs for `batch`: `logits` plus what the model exposes (`hidden`,
        `pooled`, `attention`), which stages may read."""

    def loss(self, outputs: dict, batch: Batch) -> tuple[Stat, dict[str, Stat]]:
        """(the objective term, statistics reported as metrics)."""

    def eval_batch(self, outputs: dict, batch: Batch) -> tuple[dict[str, Stat], dict[str, jax.Array]]:
        """(sums pooled over evaluation batches, per-example rows kept for metrics that need them)."""

    def eval_metrics(self, sums: Mapping[str, tuple[float, float]], rows: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Host: evaluation figures from the pooled `(sum, count)` pairs and concatenated rows."""

    def open_batches(self, cfg: TrainConfig, split: str, tokenizer: Any, *, shard_index: int,
                     shard_count: int) -> BatchIterator: ...


def _int32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.int32)


class NextTokenLM:
    """Causal language modelling on packed rows (`holo_jax.data.PackedBatches`)."""

    name = "next_token_lm"
    warm_start_params: tuple[str, ...] = ()

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        return CausalLM(model_cfg)

    def init_inputs(self, seq_len: int) -> tuple:
        return (jnp.zeros((1, seq_len), jnp.int32),)

    def example_batch(self, global_batch: int, seq_len: int) -> dict[str, jax.ShapeDtypeStruct]:
        return {"inputs": _int32(global_batch, seq_len), "targets": _int32(global_batch, seq_len)}

    def apply(self, model, params, batch, *, deterministic, rngs=None):
        logits_btv, outputs = model.apply({"params": params}, batch["inputs"], deterministic=deterministic,
                                          rngs=rngs)
        return {**outputs, "logits": logits_btv}

    def loss(self, outputs, batch):
        ce_bt = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], batch["targets"])
        return Stat.of(ce_bt), {}

    def eval_batch(self, outputs, batch):
        ce_bt = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], batch["targets"])
        return {"loss": Stat.of(ce_bt)}, {}

    def eval_metrics(self, sums, rows):
        total, tokens = sums["loss"]
        loss = total / tokens
        return {"eval_loss": loss, "eval_perplexity": float(np.exp(min(loss, 50.0)))}

    def open_batches(self, cfg, split, tokenizer, *, shard_index, shard_count):
        from holo_jax.data import PackedBatches, make_source  # data is only needed by the loop

        return PackedBatches(make_source(cfg.data, split), tokenizer, seq_len=cfg.model.max_len,
                             global_batch=cfg.global_batch, process_index=shard_index,
                             process_count=shard_count, seed=cfg.data.seed)


class SequenceClassification:
    """One label per text, from the decoder's state at the last real token (`SequenceClassifier`).

    `identities` names the membership columns a batch carries (`identities` [b, k], 1 = the
    example mentions that identity); the task does not use them, the fairness stages do."""

    name = "sequence_classification"
    # The decoder is the LM's (holo_jax.model.heads); the classification head starts fresh.
    warm_start_params: tuple[str, ...] = ("decoder",)

    def __init__(self, num_classes: int = 2, identities: tuple[str, ...] = (), label_key: str = "label",
                 pooling: str = "last"):
        if num_classes < 2:
            raise HoloError(f"task.num_classes must be at least 2, got {num_classes}.")
        self.num_classes, self.identities, self.label_key = num_classes, tuple(identities), label_key
        self.pooling = pooling

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        return SequenceClassifier(model_cfg, self.num_classes, pooling=self.pooling)

    def init_inputs(self, seq_len: int) -> tuple:
        return jnp.zeros((1, seq_len), jnp.int32), jnp.ones((1,), jnp.int32)

    def example_batch(self, global_batch: int, seq_len: int) -> dict[str, jax.ShapeDtypeStruct]:
        # `identities` [b, k] even for k = 0: ClassificationBatches always yields the column, and a
        # batch must match these fields exactly (they fix the step's input shardings).
        return {"tokens": _int32(global_batch, seq_len), "lengths": _int32(global_batch),
                "label": _int32(global_batch), "identities": _int32(global_batch, len(self.identities))}

    def apply(self, model, params, batch, *, deterministic, rngs=None):
        logits_bc, outputs = model.apply({"params": params}, batch["tokens"], batch["lengths"],
                                         deterministic=deterministic, rngs=rngs)
        return {**outputs, "logits": logits_bc}

    def loss(self, outputs, batch):
        logits_bc = outputs["logits"]
        ce_b = optax.softmax_cross_entropy_with_integer_labels(logits_bc, batch["label"])
        correct_b = jnp.argmax(logits_bc, axis=-1) == batch["label"]
        return Stat.of(ce_b), {"accuracy": Stat.of(correct_b)}

    def eval_batch(self, outputs, batch):
        logits_bc = outputs["logits"]
        ce_b = optax.softmax_cross_entropy_with_integer_labels(logits_bc, batch["label"])
        probs_bc = jax.nn.softmax(logits_bc, axis=-1)
        rows = {"label": batch["label"], "probs": probs_bc}
        if self.identities:
            rows["identities"] = batch["identities"]
        return {"loss": Stat.of(ce_b), "accuracy": Stat.of(jnp.argmax(logits_bc, -1) == batch["label"])}, rows

    def eval_metrics(self, sums, rows):
        metrics = {"eval_loss": sums["loss"][0] / sums["loss"][1],
                   "eval_accuracy": sums["accuracy"][0] / sums["accuracy"][1]}
        labels, probs = np.asarray(rows["label"]), np.asarray(rows["probs"])
        if self.num_classes == 2:
            metrics["eval_auc"] = roc_auc(labels == 1, probs[:, 1])
        else:  # macro one-vs-rest, as scikit-learn's roc_auc_score(multi_class="ovr", average="macro")
            metrics["eval_auc"] = float(np.nanmean([roc_auc(labels == c, probs[:, c]) for c in range(self.num_classes)]))
        return metrics

    def _check_fixed_dataset(self, what: str, not_covered: str, columns: tuple[str, ...]) -> None:
        """A fixed toxicity dataset (checked here, not left to ClassificationBatches, whose advice to
        rebuild the source with the task's classes or identities cannot be followed for one)."""
        if self.num_classes != 2:
            raise HoloError(f"{what} has 2 classes (toxic or not), but task.num_classes is {self.num_classes}; "
                            f"set task.num_classes=2.")
        unknown = [name for name in self.identities if name not in columns]
        if unknown:
            raise HoloError(f"task.identities names {', '.join(unknown)}, which {not_covered}; use: "
                            f"{', '.join(columns)}.")

    def open_batches(self, cfg, split, tokenizer, *, shard_index, shard_count):
        from holo_jax.data import (CivilCommentsSource, ClassificationBatches, EmbeddedToxicitySource,
                                   LocalExamplesSource)
        from holo_jax.data.civil_comments import IDENTITY_COLUMNS, SOURCE_NAME as CIVIL_COMMENTS
        from holo_jax.data.embedded_toxicity import EMBEDDED_IDENTITIES

        if cfg.data.source == "files":
            source = LocalExamplesSource(cfg.data.paths, num_classes=self.num_classes, split=split,
                                         text_key=cfg.data.text_key, label_key=self.label_key,
                                         identity_vocabulary=())  # names the task does not track are ignored
        elif cfg.data.source == CIVIL_COMMENTS:
            self._check_fixed_dataset(f"data.source={CIVIL_COMMENTS}", "Civil Comments does not annotate",
                                      IDENTITY_COLUMNS)
            # task.label_key's default `label` names no Civil Comments column: it means toxicity.
            label_column = "toxicity" if self.label_key == "label" else self.label_key
            source = CivilCommentsSource(split, label_column=label_column, text_key=cfg.data.text_key,
                                         data_dir=cfg.data.tfds_data_dir or None)
        elif cfg.data.source == "embedded":
            # The generated toxicity set (holo_jax.data.embedded_toxicity); fixed by its own seed, not
            # data.seed (the shuffle's), so runs that shuffle differently are scored on the same examples.
            self._check_fixed_dataset("data.source=embedded (sequence_classification)",
                                      "the embedded toxicity set does not cover", EMBEDDED_IDENTITIES)
            if self.label_key != "label":
                raise HoloError(f"data.source=embedded has one label (toxic or not), but task.label_key is "
                                f"`{self.label_key}`; leave task.label_key at `label`.")
            source = EmbeddedToxicitySource(split, bias=cfg.data.embedded_bias)
        else:
            raise HoloError(
                "task.kind=sequence_classification reads labelled .jsonl examples (data.source=files, data.paths="
                "<files of {\"text\", \"label\", \"identities\"} lines>), Civil Comments (data.source="
                f"{CIVIL_COMMENTS}) or the embedded toxicity set (data.source=embedded), not the unlabelled text of "
                f"data.source={cfg.data.source}; set one of those."
            )
        return ClassificationBatches(source, tokenizer, seq_len=cfg.model.max_len, global_batch=cfg.global_batch,
                                     num_classes=self.num_classes, identities=self.identities,
                                     process_index=shard_index, process_count=shard_count, seed=cfg.data.seed)


def make_task(cfg: TaskConfig) -> Task:
    """The task `task.kind` names."""
    if cfg.kind == "next_token_lm":
        return NextTokenLM()
    if cfg.kind == "sequence_classification":
        return SequenceClassification(cfg.num_classes, cfg.identities, cfg.label_key, cfg.pooling)
    raise HoloError(f"unknown task.kind `{cfg.kind}`; choose next_token_lm or sequence_classification.")
