"""Documents from local `.txt` and `.jsonl` files (`data.source=files`).

Document boundaries:
- `.jsonl`: one document per non-blank line, the string under `text_key`.
- `.txt`: a file of at most 64 KiB is one document. A larger file is taken to be a
  concatenation (a book, a dump of articles) and is cut at blank lines into documents of
  about 64 KiB, so that the validation hold-out has several documents to choose from and a
  single file does not land wholly in one split.

Construction reads every file once to find the documents, check them (valid JSON, the key
present, valid UTF-8) and assign splits; only byte offsets are kept, and `document(i)`
reads its bytes back from disk, so memory stays small whatever the corpus size.
"""

from __future__ import annotations

import glob
import hashlib
import json
import mmap
import os
from typing import Iterator, Sequence

import numpy as np

from holo_jax.data.documents import check_split, holdout_split, paragraph_chunks
from holo_jax.errors import HoloError

_TXT_DOCUMENT_BYTES = 1 << 16
_EXTENSIONS = (".txt", ".jsonl")


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Files named by `paths`, in the given order, each glob expanded and sorted."""
    files: list[str] = []
    for pattern in paths:
        if any(c in pattern for c in "*?["):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise HoloError(f"data.paths pattern `{pattern}` matches no files.")
        elif not os.path.exists(pattern):
            raise HoloError(f"data file `{pattern}` does not exist; check data.paths.")
        else:
            matches = [pattern]
        for path in matches:
            if os.path.isdir(path):
                raise HoloError(
                    f"data path `{path}` is a directory; name files or a glob such as {path}/*.txt."
                )
            if not path.endswith(_EXTENSIONS):
                raise HoloError(
                    f"data file `{path}` is neither .txt nor .jsonl; give only such files in data.paths."
                )
            files.append(path)
    return files


class LocalFilesSource:
    """Random-access documents of `.txt` / `.jsonl` files; see the module docstring."""

    def __init__(self, paths: Sequence[str], text_key: str = "text", split: str = "train"):
        check_split(split)
        self.split = split
        self.text_key = text_key
        self.files = expand_paths(paths)
        file_ids, starts, ends, digests = [], [], [], []
        for file_id, path in enumerate(self.files):
            spans = _jsonl_documents(path, text_key) if path.endswith(".jsonl") else _txt_documents(path)
            for start, end, doc_split in spans:
                if doc_split == split:
                    file_ids.append(file_id)
                    starts.append(start)
                    ends.append(end)
            digests.append(_sha256(path))
        # What the documents are: sha256 over the files' digests in order (document indices depend
        # on it), so a run can tell on resume that its data changed (the trainer records it).
        self.fingerprint = hashlib.sha256("".join(digests).encode("ascii")).hexdigest()
        self._sizes = tuple(os.path.getsize(p) for p in self.files)
        self._file_id = np.asarray(file_ids, dtype=np.int32)
        self._start = np.asarray(starts, dtype=np.int64)
        self._end = np.asarray(ends, dtype=np.int64)

    def num_documents(self) -> int:
        return len(self._start)

    def document(self, index: int) -> str:
        file_id = int(self._file_id[index])
        path = self.files[file_id]
        data = read_span(path, int(self._start[index]), int(self._end[index] - self._start[index]), self._sizes[file_id])
        try:
            return json.loads(data)[self.text_key] if path.endswith(".jsonl") else data.decode("utf-8")
        except (ValueError, KeyError, TypeError):
            raise changed_file_error(path) from None

    def __repr__(self) -> str:
        return f"LocalFilesSource({len(self.files)} files, split={self.split!r})"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def changed_file_error(path: str) -> HoloError:
    return HoloError(f"data file `{path}` changed since its documents were indexed at the start of this run; do "
                     "not edit data files during a run (restore the file, or start a new --workdir to train on it).")


def read_span(path: str, start: int, length: int, expected_size: int) -> bytes:
    """`length` bytes at `start` of a file indexed when it had `expected_size` bytes. One fstat
    per read catches a file rewritten or appended to while a run reads it — one sentence, not a
    decode traceback or silently different text; same-size edits are what fingerprints are for."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size != expected_size:
            raise changed_file_error(path)
        f.seek(start)
        return f.read(length)


def _txt_documents(path: str) -> Iterator[tuple[int, int, str]]:
    """`(start, end, split)` byte spans of the documents of a `.txt` file."""
    size = os.path.getsize(path)
    if size == 0:  # mmap cannot map an empty file, and it holds no document anyway.
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        target = size if size <= _TXT_DOCUMENT_BYTES else _TXT_DOCUMENT_BYTES
        for start, end in paragraph_chunks(data, target):
            chunk = data[start:end]
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError as e:
                line = data[: start + e.start].count(b"\n") + 1
                raise HoloError(
                    f"{path}:{line} is not valid UTF-8; re-encode the file as UTF-8 (e.g. with iconv)."
                ) from None
            yield start, end, holdout_split(chunk)


def _jsonl_documents(path: str, text_key: str) -> Iterator[tuple[int, int, str]]:
    """`(start, end, split)` byte spans of the non-empty records of a `.jsonl` file."""
    with open(path, "rb") as f:
        end = 0
        for line_number, line in enumerate(f, start=1):
            start, end = end, end + len(line)
            if not line.strip():
                continue
            text = _record_text(line, text_key, f"{path}:{line_number}")
            if text.strip():
                yield start, end, holdout_split(text.encode("utf-8"))


def _record_text(line: bytes, text_key: str, where: str) -> str:
    try:
        record = json.loads(line)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors.
        raise HoloError(
            f"{where} is not valid JSON ({e}); each .jsonl line must be one JSON object."
        ) from None
    if not isinstance(record, dict) or text_key not in record:
        fields = ", ".join(record) if isinstance(record, dict) else f"a JSON {type(record).__name__}"
        raise HoloError(
            f"{where} has no `{text_key}` field (found: {fields or 'no fields'}); "
            "set data.text_key to the field holding the text."
        )
    text = record[text_key]
    if not isinstance(text, str):
        raise HoloError(f"{where}: field `{text_key}` is a {type(text).__name__}, not a string.")
    return text
