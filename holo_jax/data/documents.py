"""What a document source is, plus the two rules every local source shares.

A source serves the documents of one split (`"train"` or `"validation"`) either by random
access (`num_documents` + `document(i)`) or, when the storage only reads forwards (TFDS
record files), sequentially (`num_documents` + `iterate(start)`). The packing pipeline
accepts both.

Local sources (embedded corpus, local files) have no predefined validation split, so they
hold out documents by a stable hash of their text: the split of a document never depends
on file order, on which other files are listed, or on the Python process (unlike
`hash()`), and identical texts always land in the same split.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterator, Protocol, runtime_checkable

from holo_jax.errors import HoloError

SPLITS = ("train", "validation")

# 5% of documents (500 of 10,000 hash buckets) are held out for validation.
_HOLDOUT_BUCKETS = 10_000
_HOLDOUT_VALIDATION = 500

# Paragraph breaks: a newline, then one or more lines holding only whitespace.
_BLANK_LINES = re.compile(rb"\n[ \t\r\f\v]*\n(?:[ \t\r\f\v]*\n)*")


@runtime_checkable
class RandomAccessSource(Protocol):
    def num_documents(self) -> int: ...

    def document(self, index: int) -> str: ...


@runtime_checkable
class SequentialSource(Protocol):
    def num_documents(self) -> int: ...

    def iterate(self, start: int) -> Iterator[tuple[int, str]]:
        """Yield `(index, text)` for index = start, start + 1, ..., num_documents() - 1."""
        ...


Source = RandomAccessSource | SequentialSource


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise HoloError(f"unknown data split `{split}`; use one of: {', '.join(SPLITS)}.")


def holdout_split(text_utf8: bytes) -> str:
    """The split ("train" or "validation") a document belongs to, from its UTF-8 bytes."""
    digest = hashlib.blake2b(text_utf8, digest_size=8).digest()
    bucket = int.from_bytes(digest, "little") % _HOLDOUT_BUCKETS
    return "validation" if bucket < _HOLDOUT_VALIDATION else "train"


def paragraph_chunks(data: bytes, target: int) -> list[tuple[int, int]]:
    """Byte spans `[start, end)` of `data` grouping whole paragraphs into chunks of ~`target` bytes.

    Chunks break only at blank lines, so no paragraph is cut; a paragraph longer than
    `target` becomes a chunk of its own. Spans exclude the blank lines around them and
    trailing whitespace, but keep the indentation a chunk starts with (code blocks).
    Works on bytes (and on `mmap` objects) because the separators are ASCII, which never
    occurs inside a multi-byte UTF-8 character.
    """
    paragraphs = []
    start = 0
    for sep in _BLANK_LINES.finditer(data):
        paragraphs.append((start, sep.start()))
        start = sep.end()
    paragraphs.append((start, len(data)))

    chunks: list[tuple[int, int]] = []
    chunk_start = chunk_end = -1
    for p_start, p_end in paragraphs:
        text = data[p_start:p_end].rstrip()
        if not text.strip():  # Whitespace before the first or after the last paragraph.
            continue
        p_end = p_start + len(text)
        if chunk_start >= 0 and p_end - chunk_start > target:
            chunks.append((chunk_start, chunk_end))
            chunk_start = -1
        if chunk_start < 0:
            chunk_start = p_start
        chunk_end = p_end
    if chunk_start >= 0:
        chunks.append((chunk_start, chunk_end))
    return chunks
