"""Score labelled examples with a trained sequence classifier, for the bias report of
`python -m experiments.fairness_eval`.

`load_classifier(workdir)` rebuilds a `task.kind=sequence_classification` run from its
`config.json` (the effective config: the original with every recorded resume change) and restores
the parameters of its latest checkpoint, and nothing else, onto one device. `read_examples(path)`
reads every example of a `.jsonl` file in file order, and `Classifier.score(texts)` gives each
text's probability of label 1, exactly once and in order, through one jitted forward of a fixed
batch shape.

Why a reader of its own rather than `LocalExamplesSource`: that source keeps one split (the hash
hold-out) of a training file, while an evaluation scores every line of the file it is given, in
order, so that `--scores-out` lines up with the input.

Why only the parameters: the optimizer state, stage states and gradient-aggregation residuals
are not needed to score, and the residuals are laid out per data-parallel replica of the training
mesh, which one evaluation device does not have. The full abstract train state is still built
(with the run's optimizer and stages), so a checkpoint is only read into the layout the run's own
code gives it, and a stage kind this process does not know fails in one sentence first.

This module is in `fairness/`, not `train/`: `train/` must not import the fairness package
(docs/DESIGN.md section 3), and this one imports `train/`, not the other way round.
"""
from __future__ import annotations

import codecs
import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from holo_jax.config import ModelConfig, TaskConfig
from holo_jax.errors import HoloError
from holo_jax.fairness.identities import AXIS_OF, IDENTITIES, axes_of

PyTree = Any
DEFAULT_BATCH_SIZE = 32


class LabelledText(NamedTuple):
    text: str
    label: int  # 0 or 1
    identities: tuple[str, ...]
    line: int  # 1-based line number in the file, for messages


@dataclasses.dataclass
class Classifier:
    """A restored binary sequence classifier; `score` runs it."""

    workdir: Path
    step: int
    model_cfg: ModelConfig
    task_cfg: TaskConfig
    task: Any  # holo_jax.train.tasks.SequenceClassification
    model: Any  # flax module
    params: PyTree
    tokenizer: Any
    batch_size: int = DEFAULT_BATCH_SIZE
    _forward: Any = None

    @property
    def max_len(self) -> int:
        return self.model_cfg.max_len

    def encode(self, text: str) -> np.ndarray:
        """Token ids as the trainer's `ClassificationBatches` makes them: the head of the text cut to
        max_len, and an empty text as one end-of-document token (the classifier pools the last real
        token, so every row needs one)."""
        ids = np.asarray(self.tokenizer.encode(text), dtype=np.int32)[: self.max_len]
        if not len(ids):
            ids = np.asarray([self.tokenizer.eos_id], dtype=np.int32)
        return ids

    def probabilities(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """P(label 1) for one batch of exactly `batch_size` rows, [batch_size, max_len] tokens."""
        if self._forward is None:
            task, model = self.task, self.model

            def forward(params, tokens_bt, lengths_b):
                out = task.apply(model, params, {"tokens": tokens_bt, "lengths": lengths_b}, deterministic=True)
                return jax.nn.softmax(out["logits"].astype(jnp.float32), axis=-1)[:, 1]

            # One fixed shape (the last batch is padded), so this compiles once per process.
            self._forward = jax.jit(forward)
        return np.asarray(self._forward(self.params, tokens, lengths))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts)]: each text's probability of label 1, in order."""
        pad_id = int(getattr(self.tokenizer, "pad_id", self.tokenizer.eos_id))
        b, t = self.batch_size, self.max_len
        out = np.empty(len(texts), dtype=np.float32)
        for start in range(0, len(texts), b):
            chunk = texts[start:start + b]
            # Rows past the chunk are padding (one token each, so lengths >= 1 holds); dropped below.
            tokens = np.full((b, t), pad_id, dtype=np.int32)
            lengths = np.ones(b, dtype=np.int32)
            for i, text in enumerate(chunk):
                ids = self.encode(text)
                tokens[i, : len(ids)] = ids
                lengths[i] = len(ids)
            out[start:start + len(chunk)] = self.probabilities(tokens, lengths)[: len(chunk)]
        return out


# --- the run ---------------------------------------------------------------------------------

def _binary_classifier(workdir: Path, task_cfg: TaskConfig) -> None:
    if task_cfg.kind != "sequence_classification":
        raise HoloError(f"{workdir} is a task.kind={task_cfg.kind} run; fairness_eval scores a "
                        "task.kind=sequence_classification run: give the --workdir of one.")
    if task_cfg.num_classes != 2:
        raise HoloError(f"{workdir} trained a {task_cfg.num_classes}-class classifier; the bias metrics need a "
                        "binary one (task.num_classes=2, label 1 = toxic).")


def load_classifier(workdir: str | Path, *, batch_size: int = DEFAULT_BATCH_SIZE) -> Classifier:
    """The classification run in `workdir` with the parameters of its latest checkpoint, on one device.

    Raises HoloError (one sentence) for a directory that is not a run, a run of another task or
    with more than two classes, a stage kind this process does not register, or a run with no
    readable checkpoint (holo_jax.train.restore_run)."""
    from holo_jax.train.restore_run import load_run

    if batch_size < 1:
        raise HoloError(f"the batch size must be at least 1, got {batch_size}.")
    run = load_run(workdir, accept=_binary_classifier, what="classification run")
    return Classifier(workdir=run.workdir, step=run.step, model_cfg=run.model_cfg, task_cfg=run.task_cfg,
                      task=run.task, model=run.model, params=run.params, tokenizer=run.tokenizer,
                      batch_size=batch_size)


# --- the data --------------------------------------------------------------------------------

def read_examples(path: str | Path) -> list[LabelledText]:
    """Every example of a `.jsonl` file, in file order: `{"text": str, "label": 0 or 1,
    "identities": [Civil Comments names]}` per non-blank line (`identities` optional). Blank lines
    hold no example and are skipped, as the trainer's reader skips them. Raises HoloError naming
    the file and line of the first bad one."""
    path = Path(path)
    if not path.exists():
        raise HoloError(f"--data {path} does not exist; give a .jsonl file of "
                        '{"text", "label", "identities"} lines.')
    if not path.is_file():
        raise HoloError(f"--data {path} is not a file; give a .jsonl file of {{\"text\", \"label\", \"identities\"}} lines.")
    examples: list[LabelledText] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):  # Windows editors' UTF-8 files
                raw = raw[len(codecs.BOM_UTF8):]
            if raw.strip():
                examples.append(_parse(raw, f"{path}:{number}", number))
    if not examples:
        raise HoloError(f"--data {path} holds no examples; give a .jsonl file with one example per line.")
    return examples


def _parse(raw: bytes, where: str, number: int) -> LabelledText:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise HoloError(f"{where} is not valid UTF-8 (byte {e.start + 1} of the line); re-encode the file as "
                        "UTF-8.") from None
    except ValueError as e:
        raise HoloError(f"{where} is not valid JSON ({e}); each line must be one JSON object.") from None
    if not isinstance(record, dict):
        raise HoloError(f"{where} is a JSON {type(record).__name__}, not an object; write one object per line.")
    for key in ("text", "label"):
        if key not in record:
            raise HoloError(f"{where} has no `{key}` field (found: {', '.join(record) or 'no fields'}); every line "
                            'needs "text" and "label".')
    text, label, names = record["text"], record["label"], record.get("identities", [])
    if not isinstance(text, str):
        raise HoloError(f"{where}: `text` is a {type(text).__name__}, not a string.")
    # bool is an int subclass; `true` as a label is almost surely a mislabelled column.
    if not isinstance(label, int) or isinstance(label, bool) or label not in (0, 1):
        raise HoloError(f"{where}: `label` is {json.dumps(label)[:80]}, not 0 or 1; binarize fractional "
                        "toxicity (label >= 0.5 is toxic) first.")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise HoloError(f"{where}: `identities` is {json.dumps(names)[:80]}, not a list of identity names such as "
                        '["female", "muslim"].')
    for name in names:
        if name not in AXIS_OF:
            try:
                axes_of((name,))  # its sentence suggests the closest identity
            except HoloError as e:
                raise HoloError(f"{where}: {e}") from None
    return LabelledText(text, label, tuple(dict.fromkeys(names)), number)


def identities_to_report(examples: Sequence[LabelledText], tracked: Sequence[str]) -> tuple[str, ...]:
    """The identities mentioned in `examples` plus those the run tracks (`task.identities`), in the
    Civil Comments column order. A tracked name outside that vocabulary cannot be placed on an axis,
    so it raises in one sentence."""
    for name in tracked:
        if name not in AXIS_OF:
            try:
                axes_of((name,))
            except HoloError as e:
                raise HoloError(f"the run's task.identities cannot be reported: {e}") from None
    named = {n for ex in examples for n in ex.identities} | set(tracked)
    return tuple(n for n in IDENTITIES if n in named)


def membership(examples: Sequence[LabelledText], identities: Sequence[str]) -> np.ndarray:
    """int8 [n, k]: 1 where example i names identities[j]."""
    column = {name: j for j, name in enumerate(identities)}
    out = np.zeros((len(examples), len(identities)), dtype=np.int8)
    for i, ex in enumerate(examples):
        for name in ex.identities:
            if name in column:
                out[i, column[name]] = 1
    return out
