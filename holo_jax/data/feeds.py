"""The virtual document sequence g = 0, 1, 2, ... and fetching its documents.

The packing pipeline sees an endless sequence of documents; row stream r of the global
batch reads g = r, r + B, r + 2B, ... (B = global batch). A feed maps g to text:

- `ShuffledFeed` (random-access sources): g is document `perm_e[g % N]` of epoch
  e = g // N, with a fresh permutation per epoch drawn from (seed, e). Any g can be fetched
  directly, so a process fetches only the documents of its own rows.
- `SequentialFeed` (forward-only sources such as TFDS): g is document g % N, in stored
  order, epoch after epoch. A process reads the sequence forwards from the smallest
  position any of its streams still needs and hands each document to the stream it
  belongs to, dropping documents of other processes' rows.

Both depend only on g (never on the process layout), which is what makes the global batch
identical for any number of processes.
"""

from __future__ import annotations

import collections
from typing import Iterator, Sequence

import numpy as np

from holo_jax.data.documents import RandomAccessSource, SequentialSource

# Streams progress at different speeds (documents differ in length), so streams near an
# epoch boundary need two permutations at once; a little headroom avoids regenerating them.
_CACHED_PERMUTATIONS = 4


class ShuffledFeed:
    """Documents of a random-access source in a per-epoch shuffled order."""

    def __init__(self, source: RandomAccessSource, seed: int):
        self._source = source
        self._n = source.num_documents()
        self._seed = seed
        self._permutations: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

    def source_index(self, g: int) -> int:
        """Index in the source of virtual document `g`."""
        epoch, i = divmod(g, self._n)
        perm = self._permutations.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self._seed, epoch]).permutation(self._n)
            # int32 halves the memory of the cached permutations for any realistic corpus.
            perm = perm.astype(np.int32 if self._n < 2**31 else np.int64)
            self._permutations[epoch] = perm
            if len(self._permutations) > _CACHED_PERMUTATIONS:
                self._permutations.popitem(last=False)
        else:
            self._permutations.move_to_end(epoch)
        return int(perm[i])

    def restart(self, positions: Sequence[int]) -> None:
        """Nothing to do: any document can be fetched directly."""

    def text(self, g: int) -> str:
        return self._source.document(self.source_index(g))


class SequentialFeed:
    """Documents of a forward-only source, dispatched to this process's row streams.

    `text(g)` must be called, for each stream, with increasing g (each stream reads its own
    documents in order), and never below the positions given to `restart`.

    Memory bound: the reader is only ever as far ahead as the most advanced local stream
    needs, so each queue holds the texts between its stream and the fastest local stream.
    Streams advance by the same number of tokens per batch, so that spread is how many more
    documents one stream needed than another for equal token counts: a random walk growing
    like sqrt(tokens per row read so far). Simulated with 16 streams, 1024-token rows and
    log-normal document lengths (mean ~660 tokens): ~90 documents per stream on average
    after 10^3 batches, ~220 after 10^4, ~780 after 10^5 (about 2 MB of C4 text per
    stream). Texts, not token arrays, are queued (4x smaller than int32 byte tokens).
    """

    def __init__(self, source: SequentialSource, global_batch: int, rows: range):
        self._source = source
        self._n = source.num_documents()
        self._global_batch = global_batch
        self._rows = rows
        self._queues: list[collections.deque[tuple[int, str]]] = [collections.deque() for _ in rows]
        self._resume_at = [0] * len(rows)
        self._reader: Iterator[tuple[int, str]] = iter(())

    def restart(self, positions: Sequence[int]) -> None:
        """Read afresh from the smallest of `positions` (the next g of each local stream)."""
        for queue in self._queues:
            queue.clear()
        self._resume_at = list(positions)
        self._reader = self._read_from(min(positions))

    def _read_from(self, g: int) -> Iterator[tuple[int, str]]:
        epoch, start = divmod(g, self._n)
        while True:
            for i, text in self._source.iterate(start):
                yield epoch * self._n + i, text
            epoch, start = epoch + 1, 0

    def text(self, g: int) -> str:
        queue = self._queues[g % self._global_batch - self._rows.start]
        while not queue:
            doc, text = next(self._reader)
            slot = doc % self._global_batch - self._rows.start
            # Skip other processes' rows, and, after a restart from the slowest local stream,
            # documents the faster streams had already consumed.
            if 0 <= slot < len(self._rows) and doc >= self._resume_at[slot]:
                self._queues[slot].append((doc, text))
        doc, text = queue.popleft()
        assert doc == g, f"stream read document {doc} when it needed {g}"  # Requests must be ordered.
        return text
