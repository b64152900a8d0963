"""Document sources by name: the embedded offline corpus, local files and TFDS datasets.

`make_source(cfg.data, split)` is what the trainer calls; the classes are public so tests
and notebooks can build them directly.
"""

from __future__ import annotations

from holo_jax.config import DataConfig, choices
from holo_jax.data.civil_comments import SOURCE_NAME as CIVIL_COMMENTS
from holo_jax.data.documents import Source, check_split, holdout_split, paragraph_chunks
from holo_jax.data.local_files import LocalFilesSource
from holo_jax.data.tfds_source import TFDS_DATASETS, TfdsSource
from holo_jax.errors import HoloError

# ~2 KB chunks turn the 79 help topics into several hundred documents: enough rows of
# independent text for a global batch of 16-64 and a validation hold-out of a few dozen.
_EMBEDDED_CHUNK_BYTES = 2048


class EmbeddedSource:
    """English prose shipped with CPython: the help topics of `pydoc_data.topics`.

    ~465 KB of documentation text that is always present, so the default configuration
    trains offline. Each topic is cut at blank lines into ~2 KB documents; the split is the
    hash hold-out of `documents.holdout_split`. The text (and so the document count) is
    that of the running CPython version.
    """

    def __init__(self, split: str = "train"):
        from pydoc_data.topics import topics  # Lazy: only this source needs the 465 KB table.

        check_split(split)
        self.split = split
        self._documents: list[str] = []
        for name in sorted(topics):
            data = topics[name].encode("utf-8")
            for start, end in paragraph_chunks(data, _EMBEDDED_CHUNK_BYTES):
                if holdout_split(data[start:end]) == split:
                    self._documents.append(data[start:end].decode("utf-8"))

    def num_documents(self) -> int:
        return len(self._documents)

    def document(self, index: int) -> str:
        return self._documents[index]

    def __repr__(self) -> str:
        return f"EmbeddedSource(split={self.split!r})"


SOURCE_NAMES = choices(DataConfig, "source")  # declared once, in the config
# Document (LM) sources are dispatched below; civil_comments is a labelled-example source that only
# SequenceClassification.open_batches builds. A new source must be declared in the config too.
LM_SOURCE_NAMES = ("embedded", "files", *TFDS_DATASETS, "mixture")
if set(SOURCE_NAMES) != {*LM_SOURCE_NAMES, CIVIL_COMMENTS}:
    raise ImportError(f"data.source choices {SOURCE_NAMES} do not match the sources implemented here")


def make_source(cfg: DataConfig, split: str) -> Source:
    """The document source named by `cfg.source`, serving `split` ("train" or "validation")."""
    check_split(split)
    if cfg.source == "embedded":
        return EmbeddedSource(split)
    if cfg.source == "files":
        if not cfg.paths:
            raise HoloError(
                "data.source=files needs data.paths, e.g. --set data.paths=corpus/*.txt,extra.jsonl."
            )
        return LocalFilesSource(cfg.paths, text_key=cfg.text_key, split=split)
    if cfg.source == "mixture":
        from holo_jax.data.mixture import make_mixture  # imports this module's make_source back

        return make_mixture(cfg, split)
    if cfg.source in TFDS_DATASETS:
        return TfdsSource(cfg.source, split, text_key=cfg.text_key, data_dir=cfg.tfds_data_dir or None)
    if cfg.source == CIVIL_COMMENTS:
        raise HoloError(
            f"data.source={CIVIL_COMMENTS} holds labelled comments for task.kind=sequence_classification, not "
            f"documents for language modelling; set task.kind=sequence_classification or pick an LM source: "
            f"{', '.join(LM_SOURCE_NAMES)}."
        )
    raise HoloError(f"unknown data source `{cfg.source}`; valid sources are: {', '.join(SOURCE_NAMES)}.")
