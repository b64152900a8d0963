"""Embedded corpus, local files, the hash hold-out and `make_source`."""

import json

import pytest

from holo_jax.config import DataConfig
from holo_jax.data import (
    SOURCE_NAMES,
    EmbeddedSource,
    LocalFilesSource,
    RandomAccessSource,
    holdout_split,
    make_source,
)
from holo_jax.data.documents import paragraph_chunks
from holo_jax.errors import HoloError


def _all_documents(source) -> list[str]:
    return [source.document(i) for i in range(source.num_documents())]


def test_paragraph_chunks_break_only_at_blank_lines():
    data = b"\n\naa aa\nbb\n\n  \ncc\n\ndd dd dd dd dd\n\n\n"
    spans = paragraph_chunks(data, target=12)
    assert [data[s:e] for s, e in spans] == [b"aa aa\nbb", b"cc", b"dd dd dd dd dd"]
    # A large target keeps everything (minus surrounding blank lines) as one chunk.
    [(s, e)] = paragraph_chunks(data, target=len(data))
    assert data[s:e] == b"aa aa\nbb\n\n  \ncc\n\ndd dd dd dd dd"


def test_holdout_is_stable_and_about_five_percent():
    texts = [f"document number {i}".encode() for i in range(20_000)]
    held_out = sum(holdout_split(t) == "validation" for t in texts)
    assert 800 < held_out < 1200
    assert [holdout_split(t) for t in texts[:50]] == [holdout_split(t) for t in texts[:50]]


def test_embedded_source_splits_topics_into_disjoint_documents():
    train, validation = EmbeddedSource("train"), EmbeddedSource("validation")
    assert isinstance(train, RandomAccessSource)
    train_docs, val_docs = _all_documents(train), _all_documents(validation)
    assert 200 <= len(train_docs) + len(val_docs) <= 1000
    assert 0.02 < len(val_docs) / (len(train_docs) + len(val_docs)) < 0.1
    assert not set(train_docs) & set(val_docs)
    assert all(d.strip() and len(d.encode()) <= 8192 for d in train_docs + val_docs)
    assert any('The "assert" statement' in d for d in train_docs + val_docs)
    # Deterministic: a second construction serves the same documents in the same order.
    assert _all_documents(EmbeddedSource("train")) == train_docs


def test_txt_files_small_whole_and_large_split_at_blank_lines(tmp_path):
    (tmp_path / "a.txt").write_text("Small file.\n\nStill the same document.\n", encoding="utf-8")
    paragraphs = [f"Paragraph {i} " + " ".join(["wörds"] * 400) for i in range(60)]  # ~150 KB
    (tmp_path / "b.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    docs = []
    for split in ("train", "validation"):
        source = LocalFilesSource([str(tmp_path / "*.txt")], split=split)
        docs += _all_documents(source)
    assert "Small file.\n\nStill the same document." in docs
    big = [d for d in docs if d.startswith("Paragraph")]
    assert len(big) >= 3
    assert all(len(d.encode()) <= 1 << 16 for d in big)
    # Chunks hold whole paragraphs: together they are exactly the file's paragraphs.
    assert sorted(p for d in big for p in d.split("\n\n")) == sorted(paragraphs)


def test_jsonl_one_document_per_line(tmp_path):
    lines = [{"body": f"record {i} ünïcode", "id": i} for i in range(200)] + [{"body": "  "}]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n", encoding="utf-8")
    train = LocalFilesSource([str(path)], text_key="body", split="train")
    validation = LocalFilesSource([str(path)], text_key="body", split="validation")
    assert train.num_documents() + validation.num_documents() == 200  # The blank record is dropped.
    assert 0 < validation.num_documents() < 30
    assert sorted(_all_documents(train) + _all_documents(validation)) == sorted(
        r["body"] for r in lines[:200]
    )


def test_globs_are_expanded_sorted_in_given_order(tmp_path):
    for name in ("b.txt", "a.txt", "c.jsonl"):
        (tmp_path / name).write_text('{"text": "x"}' if name.endswith("jsonl") else name, encoding="utf-8")
    source = LocalFilesSource([str(tmp_path / "c.jsonl"), str(tmp_path / "*.txt")])
    assert source.files == [str(tmp_path / n) for n in ("c.jsonl", "a.txt", "b.txt")]


def test_missing_and_unsupported_files_are_named(tmp_path):
    with pytest.raises(HoloError, match=f"data file `{tmp_path}/missing.txt` does not exist"):
        LocalFilesSource([str(tmp_path / "missing.txt")])
    with pytest.raises(HoloError, match="matches no files"):
        LocalFilesSource([str(tmp_path / "*.jsonl")])
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(HoloError, match="notes.md` is neither .txt nor .jsonl"):
        LocalFilesSource([str(tmp_path / "notes.md")])


def test_bad_jsonl_lines_are_named_by_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"title": "no text here"}\n', encoding="utf-8")
    with pytest.raises(HoloError, match=r"bad.jsonl:2 has no `text` field \(found: title\)"):
        LocalFilesSource([str(path)])
    path.write_text('{"text": "fine"}\n\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(HoloError, match=r"bad.jsonl:3 is not valid JSON"):
        LocalFilesSource([str(path)])
    path.write_text('{"text": 7}\n', encoding="utf-8")
    with pytest.raises(HoloError, match=r"bad.jsonl:1: field `text` is a int, not a string"):
        LocalFilesSource([str(path)])


def test_txt_that_is_not_utf8_is_named_by_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(HoloError, match=r"latin1.txt:2 is not valid UTF-8"):
        LocalFilesSource([str(path)])


def test_make_source_by_name(tmp_path):
    assert isinstance(make_source(DataConfig(), "validation"), EmbeddedSource)
    path = tmp_path / "t.txt"
    path.write_text("some text", encoding="utf-8")
    source = make_source(DataConfig(source="files", paths=(str(path),)), "train")
    assert isinstance(source, LocalFilesSource)


def test_make_source_rejects_bad_names():
    with pytest.raises(
        HoloError, match="unknown data source `c5`; valid sources are: " + ", ".join(SOURCE_NAMES)
    ):
        make_source(DataConfig(source="c5"), "train")
    with pytest.raises(HoloError, match="data.source=files needs data.paths"):
        make_source(DataConfig(source="files"), "train")
    with pytest.raises(HoloError, match="unknown data split `test`"):
        make_source(DataConfig(), "test")
