"""Shuffled, process-sharded, exactly resumable batches of labelled examples.

Row r of global batch k is virtual example g = k*B + r (B = global batch): example
`perm_e[g % N]` of epoch e = g // N, with a fresh permutation per epoch drawn from (seed, e)
(the `ShuffledFeed` order of the packed LM pipeline). Batches walk each epoch's permutation in
order, so every example appears exactly once per epoch, and a batch that crosses an epoch
boundary ends one permutation and starts the next.

Process p of P owns rows [p*B/P, (p+1)*B/P) and reads only their examples. A row depends on
nothing but (seed, k, r), so concatenating the local batches of processes 0..P-1 gives the
1-process batch.

One example is one row, never packed: a classifier pools one position per text. Its tokens are
cut to the first seq_len (the head is kept, as HF tokenizers truncate by default) and padded
after `lengths` real tokens; an empty text becomes one end-of-document token, so every row
has a last real token for the classifier to pool (`lengths >= 1`).

Resumable state is the number of batches done, which determines every following row. It is
stored per local row, int32 of shape [local rows] like `PackedBatches`' state, so the trainer
checkpoints both pipelines' states the same way (one global array sharded like the batch) and
a restore with another process count just hands each process its rows of it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from holo_jax.data.examples import ExampleSource
from holo_jax.data.feeds import ShuffledFeed
from holo_jax.data.pipeline import checked_row_state, rows_of_process
from holo_jax.data.tokenizer import Tokenizer
from holo_jax.errors import HoloError

# row:          global row index of each local row (lets `restore` check it got the right rows).
# batches_done: global batches produced so far; the same in every row.
CLASSIFICATION_STATE_KEYS = ("row", "batches_done")
_INT32_MAX = np.iinfo(np.int32).max


class ClassificationBatches:
    """Iterator of this process's rows of each global batch, as numpy arrays (L = local rows):

    - `tokens` int32 [L, seq_len]: the text's tokens, truncated, then padding;
    - `lengths` int32 [L]: real tokens per row, in 1..seq_len;
    - `label` int32 [L]: the class id;
    - `identities` int32 [L, len(identities)]: 1 where the example names that identity, else 0.
    """

    def __init__(
        self,
        source: ExampleSource,
        tokenizer: Tokenizer,
        *,
        seq_len: int,
        global_batch: int,
        num_classes: int,
        identities: tuple[str, ...],
        process_index: int = 0,
        process_count: int = 1,
        seed: int = 0,
    ):
        self.rows = rows_of_process(seq_len, global_batch, process_index, process_count)
        if num_classes != source.num_classes:
            raise HoloError(
                f"the task has {num_classes} classes but {source!r} checked its labels against "
                f"{source.num_classes}; build the source with the task's num_classes."
            )
        identities = tuple(identities)
        if len(set(identities)) != len(identities):
            raise HoloError(f"identities {list(identities)} name one identity twice; list each once.")
        # A name the source never accepts would be a column of zeros: a silent empty subgroup.
        vocabulary = set(source.identity_vocabulary)
        outside = [name for name in identities if vocabulary and name not in vocabulary]
        if outside:
            raise HoloError(
                f"identities {', '.join(outside)} are not in the vocabulary {source!r} checked its "
                "examples against; build the source with the task's identities."
            )
        self._n = source.num_documents()
        if self._n == 0:
            raise HoloError(
                f"the data source {source!r} has no examples; give it some or pick another split or source."
            )
        # SentencePieceTokenizer has no pad id (most models are trained without one). Any valid
        # token id pads correctly: the causal classifier pools position lengths - 1, which never
        # attends to the padding after it, so eos is the fallback.
        self.pad_id = int(getattr(tokenizer, "pad_id", tokenizer.eos_id))
        self.source = source
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.global_batch = global_batch
        self.num_classes = num_classes
        self.identities = identities
        self._column = {name: j for j, name in enumerate(identities)}
        self._feed = ShuffledFeed(source, seed)
        self._batches_done = 0

    def __iter__(self) -> ClassificationBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        local = len(self.rows)
        tokens = np.full((local, self.seq_len), self.pad_id, dtype=np.int32)
        lengths = np.empty(local, dtype=np.int32)
        label = np.empty(local, dtype=np.int32)
        identities = np.zeros((local, len(self.identities)), dtype=np.int32)
        for i, row in enumerate(self.rows):
            index = self._feed.source_index(self._batches_done * self.global_batch + row)
            example = self.source.example(index)
            ids = self.tokenizer.encode(example.text)[: self.seq_len]
            if not len(ids):
                ids = np.asarray([self.tokenizer.eos_id], dtype=np.int32)
            tokens[i, : len(ids)] = ids
            lengths[i] = len(ids)
            # Re-checked per row (one comparison): an in-memory source need not validate, and a
            # label outside the head's classes would index past the logits without any error.
            if not 0 <= example.label < self.num_classes:
                raise HoloError(
                    f"example {index} of {self.source!r} has label {example.label}, outside "
                    f"0..{self.num_classes - 1}; fix the data or the task's num_classes."
                )
            label[i] = example.label
            for name in example.identities:
                column = self._column.get(name)  # Names the task does not track are ignored.
                if column is not None:
                    identities[i, column] = 1
        self._batches_done += 1
        return {"tokens": tokens, "lengths": lengths, "label": label, "identities": identities}

    def state(self) -> dict[str, np.ndarray]:
        """The position of the iterator; see `CLASSIFICATION_STATE_KEYS`."""
        if self._batches_done > _INT32_MAX:  # ~2^31 batches: not a realistic run.
            raise HoloError("more than 2^31 batches were read; the data state no longer fits int32.")
        return {
            "row": np.asarray(self.rows, dtype=np.int32),
            "batches_done": np.full(len(self.rows), self._batches_done, dtype=np.int32),
        }

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue exactly where the iterator that produced `state` (for these rows) stopped."""
        arrays = checked_row_state(state, CLASSIFICATION_STATE_KEYS, self.rows)
        done = arrays["batches_done"]
        if done.min() != done.max() or done.min() < 0:
            raise HoloError(
                f"the data state's batches_done {sorted(set(done.tolist()))} is not one count >= 0 "
                "for all rows; the checkpoint's data state is corrupt."
            )
        self._batches_done = int(done[0])
