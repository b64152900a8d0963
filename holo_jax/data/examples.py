"""Labelled examples (text, class id, identity names) from local `.jsonl` files.

One example per non-blank line: `{"text": str, "label": int, "identities": [names]}`. The text
and label keys are configurable; `identities` is optional (absent = the example names none).
An empty text is a valid example (the batcher turns it into one end-of-document token): unlike
the LM sources, a labelled example is never skipped, so example counts match the file.

Construction reads every file once to check every line (valid UTF-8, valid JSON, the text a
string, the label an integer in [0, num_classes), identities a list of known names) and to
assign splits; only byte offsets are kept and `example(i)` parses its line again from disk, so
memory stays at ~16 bytes per example whatever the corpus size.

Split: the hash hold-out of `documents.holdout_split` over the text's UTF-8 bytes only, not the
label or identities, so duplicated texts with disagreeing annotations (common in crowd-labelled
toxicity data) land in the same split instead of leaking between train and validation.

Fingerprint: sha256 of the files' bytes, not size + mtime. Every byte is read at construction
anyway, so hashing costs a few percent of the JSON parsing; and it is exact where size + mtime
is not (a copy or `touch` changes mtime without changing a label, an in-place edit of the same
size within the filesystem's mtime granularity changes a label without changing either). A
caller stores `fingerprint` with its checkpoint and compares it on resume, because a resumed
position (batches done) names different examples once the files change.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from typing import Collection, Iterator, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from holo_jax.data.documents import check_split, holdout_split
from holo_jax.data.local_files import changed_file_error, expand_paths, read_span
from holo_jax.errors import HoloError

IDENTITIES_KEY = "identities"


class Example(NamedTuple):
    text: str
    label: int
    identities: tuple[str, ...]


@runtime_checkable
class ExampleSource(Protocol):
    """Random access to the labelled examples of one split.

    `num_documents`/`document` make every example source a `RandomAccessSource` as well, so the
    same files can feed `PackedBatches` (e.g. LM pretraining on the classification texts) and
    share its per-epoch shuffle.
    """

    num_classes: int
    # Identity names an example may carry; empty = not checked (any name is accepted).
    identity_vocabulary: tuple[str, ...]

    def num_documents(self) -> int: ...

    def document(self, index: int) -> str: ...

    def example(self, index: int) -> Example: ...


class LocalExamplesSource:
    """Labelled examples of `.jsonl` files, one split of them; see the module docstring.

    `identity_vocabulary`: the identity names an example may carry (e.g. `cfg.task.identities`);
    a line naming any other is rejected, which catches typos ("muslin") that would otherwise
    silently leave a fairness subgroup empty. Empty means any name is accepted.
    """

    def __init__(
        self,
        paths: Sequence[str],
        *,
        num_classes: int,
        split: str = "train",
        text_key: str = "text",
        label_key: str = "label",
        identity_vocabulary: Collection[str] = (),
    ):
        check_split(split)
        if num_classes < 2:
            raise HoloError(f"num_classes is {num_classes}; a classifier needs at least 2 classes.")
        self.split = split
        self.num_classes = num_classes
        self.text_key = text_key
        self.label_key = label_key
        self.identity_vocabulary = tuple(identity_vocabulary)
        self._vocabulary = frozenset(self.identity_vocabulary)
        self.files = expand_paths(paths)
        for path in self.files:
            if not path.endswith(".jsonl"):
                raise HoloError(
                    f"data file `{path}` is not .jsonl; labelled examples must be .jsonl lines of "
                    f'{{"{text_key}": ..., "{label_key}": ...}}.'
                )
        file_ids, starts, lengths, digests, sizes = [], [], [], [], []
        for file_id, path in enumerate(self.files):
            digest = hashlib.sha256()
            found = False
            for start, line, line_number in _lines(path, digest):
                found = True
                example = self._parse(line, f"{path}:{line_number}")
                if holdout_split(example.text.encode("utf-8")) == split:
                    file_ids.append(file_id)
                    starts.append(start)
                    lengths.append(len(line))
            if not found:  # Almost always a truncated export or a wrong glob, not an intent.
                raise HoloError(
                    f"data file `{path}` holds no examples; fill it or remove it from data.paths."
                )
            digests.append(digest.hexdigest())
            sizes.append(os.path.getsize(path))
        self.file_sha256 = tuple(digests)
        # Over the per-file digests in file order (example indices depend on it), not the paths,
        # so moving the data directory keeps the fingerprint.
        self.fingerprint = hashlib.sha256("".join(digests).encode("ascii")).hexdigest()
        self._sizes = tuple(sizes)
        self._file_id = np.asarray(file_ids, dtype=np.int32)
        self._start = np.asarray(starts, dtype=np.int64)
        self._length = np.asarray(lengths, dtype=np.int32)

    def num_documents(self) -> int:
        return len(self._start)

    def document(self, index: int) -> str:
        return self.example(index).text

    def example(self, index: int) -> Example:
        file_id = int(self._file_id[index])
        path = self.files[file_id]
        line = read_span(path, int(self._start[index]), int(self._length[index]), self._sizes[file_id])
        try:
            return self._parse(line, path)
        except HoloError:  # The line at the indexed offset is no longer a valid example.
            raise changed_file_error(path) from None

    def _parse(self, line: bytes, where: str) -> Example:
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise HoloError(
                f"{where} is not valid UTF-8 (byte {e.start + 1} of the line); "
                "re-encode the file as UTF-8 (e.g. with iconv)."
            ) from None
        except ValueError as e:
            raise HoloError(
                f"{where} is not valid JSON ({e}); each .jsonl line must be one JSON object."
            ) from None
        if not isinstance(record, dict):
            raise HoloError(
                f"{where} is a JSON {type(record).__name__}, not an object; write one object per line."
            )
        for key, setting in ((self.text_key, "data.text_key"), (self.label_key, "task.label_key")):
            if key not in record:
                raise HoloError(
                    f"{where} has no `{key}` field (found: {', '.join(record) or 'no fields'}); "
                    f"add it or set {setting} to the field that holds it."
                )
        text, label = record[self.text_key], record[self.label_key]
        if not isinstance(text, str):
            raise HoloError(f"{where}: field `{self.text_key}` is a {type(text).__name__}, not a string.")
        # bool is an int subclass in Python; `true` as a class id is almost surely a mislabelled column.
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < self.num_classes:
            raise HoloError(
                f"{where}: label `{self.label_key}` is {json.dumps(label)[:80]}, not an integer class id in "
                f"0..{self.num_classes - 1}; write class ids as integers (threshold scores first)."
            )
        names = record.get(IDENTITIES_KEY, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise HoloError(
                f"{where}: field `{IDENTITIES_KEY}` is {json.dumps(names)[:80]}, not a list of identity "
                'names such as ["female", "muslim"].'
            )
        if self._vocabulary:
            unknown = sorted(set(names) - self._vocabulary)
            if unknown:
                raise HoloError(
                    f"{where} names unknown identit{'ies' if len(unknown) > 1 else 'y'} "
                    f"{', '.join(unknown)}; use only {', '.join(self.identity_vocabulary)} "
                    "or add the name to task.identities."
                )
        return Example(text, label, tuple(names))

    def __repr__(self) -> str:
        return f"LocalExamplesSource({len(self.files)} files, split={self.split!r})"


def _lines(path: str, digest) -> Iterator[tuple[int, bytes, int]]:
    """`(byte offset, line, line number)` of the non-blank lines of `path`; feeds every byte to `digest`."""
    with open(path, "rb") as f:
        end = 0
        for line_number, line in enumerate(f, start=1):
            digest.update(line)
            start, end = end, end + len(line)
            if line_number == 1 and line.startswith(codecs.BOM_UTF8):
                # Editors and spreadsheet exports on Windows often start UTF-8 files with a BOM,
                # which `json.loads` rejects; the example starts after it.
                line, start = line[len(codecs.BOM_UTF8) :], start + len(codecs.BOM_UTF8)
            if line.strip():
                yield start, line, line_number
