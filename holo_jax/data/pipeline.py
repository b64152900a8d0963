"""Packed, process-sharded, exactly resumable batches of token rows.

Row r of every global batch comes from its own "row stream": the stream reads virtual
documents g = r, r + B, r + 2B, ... (B = global batch, see `feeds`), tokenizes each, appends
the end-of-document token, and cuts the resulting token stream into consecutive rows of
seq_len + 1 tokens (inputs = row[:-1], targets = row[1:]). Empty documents are skipped.

Process p of P owns rows [p*B/P, (p+1)*B/P) and only reads the documents of those rows.
Because a row depends on nothing but its stream, the global batch is the same whatever P
is: concatenating the local batches of processes 0..P-1 gives the 1-process batch.

Resumable state is a cursor per stream, with no buffered tokens: rows are contiguous cuts
of the stream, so (current document, tokens of it already emitted) fully determines what
comes next; on restore each stream re-reads and re-tokenizes one document and skips the
emitted prefix. Every state leaf is int32 of shape [local rows], so the trainer can store
it in the checkpoint as one global array sharded like the batch (int32 because JAX without
x64 silently truncates int64 arrays), and restoring with a different process count just
hands each process its rows of that array.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from holo_jax.data.documents import RandomAccessSource, Source
from holo_jax.data.feeds import SequentialFeed, ShuffledFeed
from holo_jax.data.tokenizer import Tokenizer
from holo_jax.errors import HoloError

# row:        global row index of each local row (lets `restore` check it got the right rows).
# stream_doc: how many documents the row's stream has finished; it is now reading virtual
#             document g = stream_doc * global_batch + row.
# doc_offset: tokens of that document (its end-of-document token counts as its last) already emitted.
STATE_KEYS = ("row", "stream_doc", "doc_offset")
_INT32_MAX = np.iinfo(np.int32).max


def rows_of_process(seq_len: int, global_batch: int, process_index: int, process_count: int) -> range:
    """The global rows process `process_index` of `process_count` feeds, after checking the layout."""
    if seq_len < 1 or global_batch < 1:
        raise HoloError(f"seq_len ({seq_len}) and global_batch ({global_batch}) must both be at least 1.")
    if not 0 <= process_index < process_count:
        raise HoloError(f"process_index {process_index} is outside 0..{process_count - 1}.")
    if global_batch % process_count:
        raise HoloError(
            f"global_batch ({global_batch}) must be divisible by the number of processes "
            f"({process_count}) so each process feeds the same number of rows; change global_batch."
        )
    local = global_batch // process_count
    return range(process_index * local, (process_index + 1) * local)


def checked_row_state(state: Mapping[str, np.ndarray], keys: tuple[str, ...], rows: range) -> dict[str, np.ndarray]:
    """`state` as arrays, after checking it has exactly `keys`, each with one entry per row of
    `rows`, and that its `row` entries are those rows (a resume must see the same batch layout)."""
    if set(state) != set(keys):
        raise HoloError(
            f"the data state has keys {sorted(state)}, expected {sorted(keys)}; "
            "the checkpoint was written by an incompatible data pipeline."
        )
    arrays = {k: np.asarray(state[k]) for k in keys}
    expected = np.asarray(rows)
    if any(a.shape != expected.shape for a in arrays.values()) or not np.array_equal(arrays["row"], expected):
        raise HoloError(
            f"the data state is for rows {arrays['row'].tolist()} but this process reads rows "
            f"{rows.start}..{rows.stop - 1}; the global batch must not change across a resume."
        )
    return arrays


class PackedBatches:
    """Iterator of `{"inputs", "targets"}`: int32 [global_batch / process_count, seq_len] numpy arrays."""

    def __init__(
        self,
        source: Source,
        tokenizer: Tokenizer,
        *,
        seq_len: int,
        global_batch: int,
        process_index: int = 0,
        process_count: int = 1,
        seed: int = 0,
    ):
        self.rows = rows_of_process(seq_len, global_batch, process_index, process_count)
        self._n = source.num_documents()
        if self._n == 0:
            raise HoloError(
                f"the data source {source!r} has no documents; give it some text or pick another source."
            )
        self.source = source
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.global_batch = global_batch
        local = len(self.rows)
        if isinstance(source, RandomAccessSource):
            self._feed: ShuffledFeed | SequentialFeed = ShuffledFeed(source, seed)
        else:
            self._feed = SequentialFeed(source, global_batch, self.rows)
        self._stream_doc = [0] * local
        self._doc_offset = [0] * local
        # Tokens (with the trailing end-of-document token) of each stream's current document;
        # None until the stream needs it. At most one document per stream is held.
        self._tokens: list[np.ndarray | None] = [None] * local
        self._feed.restart(self._positions())

    def __iter__(self) -> PackedBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = np.empty((len(self.rows), self.seq_len + 1), dtype=np.int32)
        for i in range(len(self.rows)):
            self._fill_row(i, batch[i])
        return {"inputs": np.ascontiguousarray(batch[:, :-1]), "targets": np.ascontiguousarray(batch[:, 1:])}

    def state(self) -> dict[str, np.ndarray]:
        """The position of every local row stream; see `STATE_KEYS`."""
        if max(self._stream_doc) > _INT32_MAX:  # Would take ~2^31 documents per row.
            raise HoloError(
                "a row stream has read more than 2^31 documents; the data state no longer fits int32."
            )
        return {
            "row": np.asarray(self.rows, dtype=np.int32),
            "stream_doc": np.asarray(self._stream_doc, dtype=np.int32),
            "doc_offset": np.asarray(self._doc_offset, dtype=np.int32),
        }

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue exactly where the iterator that produced `state` (for these rows) stopped."""
        arrays = checked_row_state(state, STATE_KEYS, self.rows)
        self._stream_doc = [int(v) for v in arrays["stream_doc"]]
        self._doc_offset = [int(v) for v in arrays["doc_offset"]]
        self._tokens = [None] * len(self.rows)
        self._feed.restart(self._positions())

    def _positions(self) -> list[int]:
        """Virtual index of the document each local stream reads next."""
        return [k * self.global_batch + r for k, r in zip(self._stream_doc, self.rows, strict=True)]

    def _fill_row(self, i: int, out: np.ndarray) -> None:
        filled = 0
        while filled < len(out):
            tokens = self._current_tokens(i)
            offset = self._doc_offset[i]
            take = min(len(out) - filled, len(tokens) - offset)
            out[filled : filled + take] = tokens[offset : offset + take]
            filled += take
            if offset + take == len(tokens):
                self._stream_doc[i] += 1
                self._doc_offset[i] = 0
                self._tokens[i] = None
            else:
                self._doc_offset[i] = offset + take

    def _current_tokens(self, i: int) -> np.ndarray:
        tokens = self._tokens[i]
        if tokens is not None:
            return tokens
        skipped = 0
        while True:
            g = self._stream_doc[i] * self.global_batch + self.rows[i]
            ids = self.tokenizer.encode(self._feed.text(g))
            if len(ids) or self._doc_offset[i]:  # A restored offset must be checked below.
                break
            # An empty document contributes nothing, not even an end-of-document token.
            self._stream_doc[i] += 1
            skipped += 1
            if skipped >= self._n:
                raise HoloError(
                    f"row {self.rows[i]} read {skipped} empty documents in a row from {self.source!r}; "
                    "the source has (almost) no text."
                )
        tokens = np.empty(len(ids) + 1, dtype=np.int32)
        tokens[:-1] = ids
        tokens[-1] = self.tokenizer.eos_id
        if self._doc_offset[i] >= len(tokens):
            raise HoloError(
                f"the restored data state points past the end of document {g} of {self.source!r}; "
                "the data source or tokenizer changed since the checkpoint was written."
            )
        self._tokens[i] = tokens
        return tokens
