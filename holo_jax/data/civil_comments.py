"""Civil Comments with identity labels (TFDS `civil_comments/CivilCommentsIdentities`) as labelled
examples for `task.kind=sequence_classification` (`data.source=civil_comments`).

Every label of Civil Comments is the fraction of raters who said it applies. An example is
`Example(text, label, identities)` with label 1 when `toxicity >= TOXIC_THRESHOLD` (or another of
the seven rated attributes, `label_column`) and the identities whose column is
`>= MEMBERSHIP_THRESHOLD`, both 0.5 (the Kaggle data page and benchmark kernel; the sources are
cited in holo_jax/fairness/identities.py). These constants and the 24 column names are defined
here, not imported from holo_jax.fairness: importing fairness loads holo_jax.train (fairness.metrics
uses its JSON helpers), and train, whose classification task builds this source, must not load
fairness (docs/DESIGN.md section 3). Fairness may import them from here (data imports nothing of
fairness, so that direction stays one-way); tests/data/test_civil_comments.py checks both agree.

Splits: our "train" and "validation" are TFDS's; its "test" split is not served (the trainer has
no test split; `experiments.fairness_eval` can read an export of it as JSONL).

Random access. `ClassificationBatches` reads examples in a fresh permutation every epoch, but
prepared TFDS data is TFRecord, which reads forwards only (`tfds.data_source` needs the
ArrayRecord format, which `tfds build` does not write by default). So construction reads the split
once, in stored order, into compact numpy arrays: the texts' UTF-8 bytes concatenated in one
buffer with int64 offsets, a uint8 label and a uint32 bit mask of the 24 memberships, ~13 bytes
per example plus its text. `CivilCommentsIdentities` train holds 405,130 comments (the full 1.8M
comments are the `CivilComments` config, which has no identity labels); at an assumed ~300 bytes
of text each (Civil Comments are short comments; measure `len(source._text)` for the exact figure)
that is ~125 MB per process (about twice that for a moment while the texts are joined). The pass
parses TFRecords at ~13,000 examples/s on two shared CPU cores (measured on 40,000 stored
examples), so ~30 s at start-up for train and ~2 s for validation, ~2.5 min if the full 1.8M were
read; more cores parse in parallel. That buys `example(i)` as two slices with no I/O, whatever the
order, and it is acceptable since every process needs all of the split anyway: each epoch's
permutation hands any example to any row. An on-disk cache would save the pass on restarts only by
adding a file whose staleness has to be checked against the dataset, for a cost paid once per run.

Fingerprint: sha256 of the arrays, i.e. of exactly the examples served (text, thresholded label
and memberships, in order). They are all in memory, so hashing costs well under a second, and it
changes whenever a resumed position (batches done) would name different examples: a re-prepared
dataset with other contents, another TFDS version's order, another label column.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from holo_jax.data.documents import check_split
from holo_jax.data.examples import Example
from holo_jax.data.tfds_source import TfdsDataset, _import_tfds
from holo_jax.errors import HoloError

SOURCE_NAME = "civil_comments"  # its data.source value

DATASET = TfdsDataset(
    "civil_comments/CivilCommentsIdentities",
    ("civil_comments/CivilCommentsIdentities",),
    {"train": "train", "validation": "validation"},
)

# A comment is toxic when at least half of its raters called it toxic (Kaggle data page).
TOXIC_THRESHOLD = 0.5
# A comment mentions an identity when at least half of its raters said so (Kaggle benchmark kernel).
MEMBERSHIP_THRESHOLD = 0.5

# The 24 identity columns in the TFDS builder's order (`IDENTITY_LABELS` of
# tensorflow_datasets/text/civil_comments.py); bit j of a membership mask is column j.
IDENTITY_COLUMNS: tuple[str, ...] = (
    "male", "female", "transgender", "other_gender",
    "heterosexual", "homosexual_gay_or_lesbian", "bisexual", "other_sexual_orientation",
    "christian", "jewish", "muslim", "hindu", "buddhist", "atheist", "other_religion",
    "black", "white", "asian", "latino", "other_race_or_ethnicity",
    "physical_disability", "intellectual_or_learning_disability", "psychiatric_or_mental_illness",
    "other_disability",
)
# The seven rated attributes every example has; any can be the binary label (default toxicity).
LABEL_COLUMNS: tuple[str, ...] = (
    "toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack", "sexual_explicit",
)

# Examples per tf.data batch while reading: large enough that the per-batch Python work
# (joining texts, thresholding) is negligible, small enough to stay a few MB.
_READ_BATCH = 4096
_BITS = np.left_shift(np.uint32(1), np.arange(len(IDENTITY_COLUMNS), dtype=np.uint32))


class CivilCommentsSource:
    """One split of prepared `civil_comments/CivilCommentsIdentities`, by random access (an
    `ExampleSource`); see the module docstring for labels, memberships and memory."""

    num_classes = 2
    identity_vocabulary = IDENTITY_COLUMNS

    def __init__(
        self,
        split: str = "train",
        *,
        label_column: str = "toxicity",
        text_key: str = "text",
        data_dir: str | None = None,
    ):
        check_split(split)
        if label_column not in LABEL_COLUMNS:
            raise HoloError(
                f"task.label_key `{label_column}` is not a rated attribute of Civil Comments; use one of: "
                f"{', '.join(LABEL_COLUMNS)} (or `label`, which means toxicity)."
            )
        self.split, self.label_column, self.text_key, self._data_dir = split, label_column, text_key, data_dir
        tfds = _import_tfds()
        builder = tfds.builder(DATASET.tfds_name, data_dir=data_dir)
        if not builder.is_prepared():
            where = data_dir or "TFDS's default data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
            raise HoloError(
                f"TFDS dataset `{DATASET.tfds_name}` (data.source={SOURCE_NAME}) is not prepared in {where}; "
                f"prepare it once with: {DATASET.prepare_command(data_dir)}"
            )
        features = list(builder.info.features.keys())
        if text_key not in features:
            raise HoloError(
                f"TFDS dataset `{DATASET.tfds_name}` has no `{text_key}` feature (it has: "
                f"{', '.join(features)}); set data.text_key to the text feature."
            )
        self._read(tfds, builder, DATASET.splits[split])

    def _read(self, tfds: Any, builder: Any, tfds_split: str) -> None:
        import tensorflow as tf  # Loaded by _import_tfds already.

        text_key, label_column = self.text_key, self.label_column

        def select(ex):  # Only these columns cross into Python; parent_text etc. stay in TF.
            return ex[text_key], ex[label_column], tf.stack([ex[c] for c in IDENTITY_COLUMNS], axis=-1)

        ds = builder.as_dataset(
            split=tfds_split,
            shuffle_files=False,  # Example indices are part of the resumable state.
            # Auto-caching would keep a second, tf.data copy of small splits in memory.
            read_config=tfds.ReadConfig(try_autocache=False),
        )
        texts: list[bytes] = []
        lengths, labels, masks = [], [], []
        seen = 0
        # Parallel but order-preserving (deterministic=True): the stored order is the index order.
        batches = ds.map(select, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        batches = batches.batch(_READ_BATCH).prefetch(1)
        for text_b, score_b, columns_bk in batches.as_numpy_iterator():
            # The builder drops rows with an empty label, so NaN or a value outside [0, 1] means the
            # prepared files are not what it writes; thresholding would silently turn NaN into 0.
            valid = (score_b >= 0) & (score_b <= 1) & np.all((columns_bk >= 0) & (columns_bk <= 1), axis=1)
            if not valid.all():
                raise HoloError(
                    f"example {seen + int(np.argmin(valid))} of `{DATASET.tfds_name}` split {tfds_split} has a "
                    "rating outside [0, 1] (a fraction of raters); re-prepare it with: "
                    f"{DATASET.prepare_command(self._data_dir)}"
                )
            texts.extend(text_b)
            lengths.append(np.fromiter((len(t) for t in text_b), dtype=np.int64, count=len(text_b)))
            labels.append((score_b >= TOXIC_THRESHOLD).astype(np.uint8))
            masks.append(((columns_bk >= MEMBERSHIP_THRESHOLD) * _BITS).sum(axis=1, dtype=np.uint32))
            seen += len(text_b)
        self._text = b"".join(texts)
        del texts  # The per-example bytes objects cost ~33 bytes each on top of their text.
        self._offsets = np.zeros(seen + 1, dtype=np.int64)
        if seen:
            np.cumsum(np.concatenate(lengths), out=self._offsets[1:])
        self._label = np.concatenate(labels) if labels else np.zeros(0, np.uint8)
        self._mask = np.concatenate(masks) if masks else np.zeros(0, np.uint32)
        digest = hashlib.sha256()
        for array in (self._offsets, self._label, self._mask):
            digest.update(array.tobytes())
        digest.update(self._text)
        self.fingerprint = digest.hexdigest()

    def num_documents(self) -> int:
        return len(self._label)

    def document(self, index: int) -> str:
        return self._text[self._offsets[index] : self._offsets[index + 1]].decode("utf-8")

    def example(self, index: int) -> Example:
        mask = int(self._mask[index])
        names = tuple(name for j, name in enumerate(IDENTITY_COLUMNS) if mask >> j & 1)
        return Example(self.document(index), int(self._label[index]), names)

    def __repr__(self) -> str:
        return f"CivilCommentsSource(split={self.split!r})"
