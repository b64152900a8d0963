"""Labelled examples from `.jsonl` files and `ClassificationBatches`: sharding, resume, epochs, checks."""

import json
import re

import numpy as np
import pytest

from holo_jax.data import (
    CLASSIFICATION_STATE_KEYS,
    ByteTokenizer,
    ClassificationBatches,
    Example,
    ExampleSource,
    LocalExamplesSource,
    RandomAccessSource,
    holdout_split,
)
from holo_jax.data.feeds import ShuffledFeed
from holo_jax.errors import HoloError

TOK = ByteTokenizer()
IDENTITIES = ("female", "male", "muslim", "christian")


class ListExamples:
    """An in-memory example source that checks nothing (the batcher must not rely on it)."""

    identity_vocabulary = ()

    def __init__(self, examples, num_classes=2):
        self.examples = examples
        self.num_classes = num_classes

    def num_documents(self):
        return len(self.examples)

    def document(self, index):
        return self.examples[index].text

    def example(self, index):
        return self.examples[index]

    def __repr__(self):
        return f"ListExamples({len(self.examples)} examples)"


def records(n, seed=0):
    """Examples tagged `#i#` (so a row names its example), lengths 0..~2 rows, some non-ASCII."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        body = "".join(rng.choice(list("abc é€"), size=int(rng.integers(0, 20))))
        picked = rng.choice(IDENTITIES + ("asian",), size=int(rng.integers(0, 3)), replace=False)
        names = [str(name) for name in picked]
        out.append({"text": f"#{i}#{body}", "label": int(rng.integers(0, 3)), "identities": names})
    return out


def write_jsonl(path, rows, blank_lines=False):
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    sep = "\n\n" if blank_lines else "\n"
    path.write_text(sep.join(lines) + "\n", encoding="utf-8")
    return str(path)


def batches(source, k, *, process_count=1, global_batch=6, seq_len=12, seed=3, identities=IDENTITIES):
    """k global batches assembled from the local batches of `process_count` iterators."""
    local = []
    for p in range(process_count):
        it = ClassificationBatches(
            source, TOK, seq_len=seq_len, global_batch=global_batch, num_classes=source.num_classes,
            identities=identities, process_index=p, process_count=process_count, seed=seed,
        )
        local.append([next(it) for _ in range(k)])
    return [{key: np.concatenate([local[p][s][key] for p in range(process_count)]) for key in local[0][s]}
            for s in range(k)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys() == {"tokens", "lengths", "label", "identities"}
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def example_ids(batch):
    """The `#i#` tag of each row, read back from its tokens."""
    texts = [TOK.decode(t[:n]) for t, n in zip(batch["tokens"], batch["lengths"], strict=True)]
    return [int(re.match(r"#(\d+)#", text).group(1)) for text in texts]


@pytest.fixture
def source(tmp_path):
    return LocalExamplesSource(
        [write_jsonl(tmp_path / "a.jsonl", records(23)), write_jsonl(tmp_path / "b.jsonl", records(20, 1))],
        num_classes=3, identity_vocabulary=IDENTITIES + ("asian",),
    )


def test_source_reads_back_each_example(tmp_path):
    rows = records(40)
    path = tmp_path / "data.jsonl"
    write_jsonl(path, rows, blank_lines=True)
    src = {s: LocalExamplesSource([str(path)], num_classes=3, split=s) for s in ("train", "validation")}
    assert isinstance(src["train"], ExampleSource) and isinstance(src["train"], RandomAccessSource)
    seen = {}
    for s in src.values():
        for i in range(s.num_documents()):
            example = s.example(i)
            assert isinstance(example, Example) and s.document(i) == example.text
            seen[example.text] = example
    assert seen == {r["text"]: Example(r["text"], r["label"], tuple(r["identities"])) for r in rows}


def test_p_processes_concatenate_to_the_one_process_batch(source):
    # 43 train+validation examples, batches of 6: the 12 batches cross epoch boundaries mid-batch.
    one = batches(source, 12)
    for p in (2, 3, 6):
        assert_same(batches(source, 12, process_count=p), one)


def test_row_r_of_batch_k_is_the_shuffled_example_k_b_plus_r():
    src = ListExamples([Example(f"#{i}#", i % 2, ()) for i in range(10)])
    order = ShuffledFeed(src, seed=3).source_index
    for k, batch in enumerate(batches(src, 7, global_batch=6, identities=())):
        assert example_ids(batch) == [order(k * 6 + r) for r in range(6)]
        np.testing.assert_array_equal(batch["label"], [i % 2 for i in example_ids(batch)])


def test_every_epoch_is_a_fresh_permutation_of_all_examples():
    n, b = 10, 4
    src = ListExamples([Example(f"#{i}#", 0, ()) for i in range(n)])
    ids = [i for batch in batches(src, 10, global_batch=b, identities=()) for i in example_ids(batch)]
    epochs = [ids[e * n : (e + 1) * n] for e in range(4)]
    assert all(sorted(epoch) == list(range(n)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) == 4
    reseeded = batches(src, 3, global_batch=b, seed=4, identities=())
    other_seed = [i for batch in reseeded for i in example_ids(batch)]
    assert other_seed[:n] != epochs[0]


@pytest.mark.parametrize("process_count", [1, 2])
def test_resume_from_state_continues_exactly(source, process_count):
    k, more = 5, 6
    straight = batches(source, k + more, process_count=process_count)
    resumed = []
    for p in range(process_count):
        make = lambda: ClassificationBatches(  # noqa: E731
            source, TOK, seq_len=12, global_batch=6, num_classes=3, identities=IDENTITIES,
            process_index=p, process_count=process_count, seed=3,
        )
        first = make()
        for _ in range(k):
            next(first)
        state = first.state()
        assert set(state) == set(CLASSIFICATION_STATE_KEYS)
        assert all(v.dtype == np.int32 and v.shape == (6 // process_count,) for v in state.values())
        second = make()
        second.restore({key: value.copy() for key, value in state.items()})
        resumed.append([next(second) for _ in range(more)])
    assert_same(
        [{key: np.concatenate([r[s][key] for r in resumed]) for key in resumed[0][s]} for s in range(more)],
        straight[k:],
    )


def test_one_process_state_restores_into_two_processes(source):
    it = ClassificationBatches(
        source, TOK, seq_len=12, global_batch=6, num_classes=3, identities=IDENTITIES, seed=3
    )
    for _ in range(4):
        next(it)
    state = it.state()
    halves = []
    for p in range(2):
        half = ClassificationBatches(
            source, TOK, seq_len=12, global_batch=6, num_classes=3, identities=IDENTITIES,
            process_index=p, process_count=2, seed=3,
        )
        half.restore({key: v[p * 3 : (p + 1) * 3] for key, v in state.items()})
        halves.append(next(half))
    assert_same([{key: np.concatenate([h[key] for h in halves]) for key in halves[0]}], [next(it)])


def test_truncation_padding_and_lengths():
    texts = ["", "abc", "0123456789", "é" * 5]  # é is 2 bytes: 10 byte tokens, cut to 8.
    src = ListExamples([Example(t, 0, ()) for t in texts])
    it = ClassificationBatches(src, TOK, seq_len=8, global_batch=4, num_classes=2, identities=())
    batch = next(it)
    order = [ShuffledFeed(src, seed=0).source_index(r) for r in range(4)]
    expected = {
        "": [TOK.eos_id] + [TOK.pad_id] * 7,
        "abc": [97, 98, 99] + [TOK.pad_id] * 5,
        "0123456789": list(b"01234567"),
        "é" * 5: list(("é" * 4).encode()),
    }
    for row, index in enumerate(order):
        np.testing.assert_array_equal(batch["tokens"][row], expected[texts[index]])
        assert batch["lengths"][row] == {"": 1, "abc": 3}.get(texts[index], 8)
    assert batch["tokens"].dtype == batch["lengths"].dtype == batch["label"].dtype == np.int32
    assert batch["tokens"].shape == (4, 8) and batch["identities"].shape == (4, 0)


def test_tokenizer_without_pad_id_pads_with_eos():
    class EosOnly:
        eos_id = 5
        vocab_size = 10

        def encode(self, text):
            return np.arange(len(text), dtype=np.int32) % 5

    src = ListExamples([Example("ab", 1, ())])
    it = ClassificationBatches(src, EosOnly(), seq_len=4, global_batch=1, num_classes=2, identities=())
    batch = next(it)
    np.testing.assert_array_equal(batch["tokens"], [[0, 1, 5, 5]])
    np.testing.assert_array_equal(batch["lengths"], [2])


def test_identities_are_one_columns_in_the_given_order():
    src = ListExamples([
        Example("a", 0, ("muslim", "female")),
        Example("b", 1, ()),
        Example("c", 0, ("asian",)),  # Named, but not tracked by the task: ignored.
        Example("d", 1, ("male", "male")),
    ])
    tracked = ("male", "female", "muslim")
    it = ClassificationBatches(src, TOK, seq_len=4, global_batch=4, num_classes=2, identities=tracked)
    batch = next(it)
    expected = {"a": [0, 1, 1], "b": [0, 0, 0], "c": [0, 0, 0], "d": [1, 0, 0]}
    for row in range(4):
        text = TOK.decode(batch["tokens"][row, : batch["lengths"][row]])
        np.testing.assert_array_equal(batch["identities"][row], expected[text])
        assert batch["label"][row] == {"a": 0, "b": 1, "c": 0, "d": 1}[text]
    assert batch["identities"].dtype == np.int32


def test_split_is_disjoint_stable_and_keeps_duplicate_texts_together(tmp_path):
    rows = records(300)
    rows.append({"text": rows[0]["text"], "label": 1 - rows[0]["label"] % 2})  # A disagreeing duplicate.
    a = write_jsonl(tmp_path / "a.jsonl", rows)

    def split_texts(paths):
        src = {s: LocalExamplesSource(paths, num_classes=3, split=s) for s in ("train", "validation")}
        return {s: [x.example(i).text for i in range(x.num_documents())] for s, x in src.items()}

    texts = split_texts([a])
    assert texts["validation"] and set(texts["train"]).isdisjoint(texts["validation"])
    assert len(texts["train"]) + len(texts["validation"]) == len(rows)
    dup = "validation" if rows[0]["text"] in texts["validation"] else "train"
    assert texts[dup].count(rows[0]["text"]) == 2
    # Reversed lines, and another file listed first: every text keeps its split.
    b = write_jsonl(tmp_path / "b.jsonl", rows[::-1])
    extra = write_jsonl(tmp_path / "extra.jsonl", [{"text": f"other {i}", "label": 0} for i in range(50)])
    again = split_texts([extra, b])
    for s in texts:
        assert set(texts[s]) == set(again[s]) - {f"other {i}" for i in range(50)}
        assert all(holdout_split(t.encode()) == s for t in again[s])


def test_fingerprint_follows_content_not_path(tmp_path):
    rows = records(12)
    (tmp_path / "x").mkdir()
    one = LocalExamplesSource([write_jsonl(tmp_path / "a.jsonl", rows)], num_classes=3)
    moved = LocalExamplesSource([write_jsonl(tmp_path / "x" / "a.jsonl", rows)], num_classes=3)
    assert one.fingerprint == moved.fingerprint and re.fullmatch(r"[0-9a-f]{64}", one.fingerprint)
    rows[3]["label"] = (rows[3]["label"] + 1) % 3  # Same byte length: size + mtime could miss it.
    relabelled = LocalExamplesSource([write_jsonl(tmp_path / "x" / "a.jsonl", rows)], num_classes=3)
    assert relabelled.fingerprint != one.fingerprint


def test_file_changed_after_indexing_is_reported(tmp_path):
    path = tmp_path / "a.jsonl"
    src = LocalExamplesSource([write_jsonl(path, records(5))], num_classes=3)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"text": "late", "label": 0}\n')
    with pytest.raises(HoloError, match=r"a.jsonl` changed since its documents were indexed"):
        src.example(0)


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"text": "hi", "label": 1}\n{"text": "yo", "label": 0}\n')
    src = {s: LocalExamplesSource([str(path)], num_classes=2, split=s) for s in ("train", "validation")}
    got = {s.example(i) for s in src.values() for i in range(s.num_documents())}
    assert got == {Example("hi", 1, ()), Example("yo", 0, ())}


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"text": "ok", "label": 0}\n{"text": oops}\n', r"bad.jsonl:2 is not valid JSON"),
        (
            b'{"text": "ok", "label": 2}\n',
            r"bad.jsonl:1: label `label` is 2, not an integer class id in 0..1; write class ids as integers",
        ),
        (b'{"text": "ok", "label": -1}\n', r"bad.jsonl:1: label `label` is -1, not an integer class id"),
        (b'{"text": "ok", "label": 1.0}\n', r"bad.jsonl:1: label `label` is 1.0, not an integer class id"),
        (b'{"text": "ok", "label": true}\n', r"bad.jsonl:1: label `label` is true, not an integer class id"),
        (b'\n{"text": "caf\xe9", "label": 0}\n', r"bad.jsonl:2 is not valid UTF-8 \(byte 14 of the line\)"),
        (
            b'{"text": "ok", "label": 0, "identities": ["muslin"]}\n',
            r"bad.jsonl:1 names unknown identity muslin; use only female, muslim",
        ),
        (
            b'{"text": "ok", "label": 0, "identities": "female"}\n',
            r"bad.jsonl:1: field `identities` is \"female\", not a list",
        ),
        (
            b'{"body": "ok", "label": 0}\n',
            r"bad.jsonl:1 has no `text` field \(found: body, label\); add it or set data.text_key",
        ),
        (
            b'{"text": "ok", "toxic": 0}\n',
            r"bad.jsonl:1 has no `label` field \(found: text, toxic\); add it or set task.label_key",
        ),
        (b'{"text": 3, "label": 0}\n', r"bad.jsonl:1: field `text` is a int, not a string"),
        (b'["text", 0]\n', r"bad.jsonl:1 is a JSON list, not an object"),
        (b"\n  \n", r"data file `.*bad.jsonl` holds no examples"),
        (b"", r"data file `.*bad.jsonl` holds no examples"),
    ],
)
def test_bad_lines_are_named_by_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(HoloError, match=message):
        LocalExamplesSource([str(path)], num_classes=2, identity_vocabulary=("female", "muslim"))


def test_other_keys_and_non_jsonl_files(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"comment": "hi", "toxic": 1}\n{"comment": "yo", "toxic": 0}\n', encoding="utf-8")
    src = [LocalExamplesSource([str(path)], num_classes=2, text_key="comment", label_key="toxic", split=s)
           for s in ("train", "validation")]
    assert sorted(s.example(i).label for s in src for i in range(s.num_documents())) == [0, 1]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(HoloError, match=r"notes.txt` is not .jsonl"):
        LocalExamplesSource([str(tmp_path / "notes.txt")], num_classes=2)
    with pytest.raises(HoloError, match=r"num_classes is 1; a classifier needs at least 2"):
        LocalExamplesSource([str(path)], num_classes=1)


def test_batcher_rejects_bad_settings(source):
    def make(src=source, **kw):
        args = dict(seq_len=12, global_batch=6, num_classes=3, identities=IDENTITIES)
        return ClassificationBatches(src, TOK, **{**args, **kw})

    with pytest.raises(HoloError, match=r"global_batch \(6\) must be divisible by the number of processes"):
        make(process_count=4)
    with pytest.raises(HoloError, match=r"has no examples"):
        make(ListExamples([], num_classes=3))
    with pytest.raises(HoloError, match=r"the task has 2 classes but .* against 3"):
        make(num_classes=2)
    with pytest.raises(HoloError, match=r"identities hindu are not in the vocabulary"):
        make(identities=("female", "hindu"))
    with pytest.raises(HoloError, match=r"name one identity twice"):
        make(identities=("female", "female"))
    with pytest.raises(HoloError, match=r"label 3, outside 0..2"):
        next(make(ListExamples([Example("x", 3, ())], num_classes=3), global_batch=1))


def test_restore_rejects_a_state_for_other_rows_or_pipeline(source):
    def make(p):
        return ClassificationBatches(
            source, TOK, seq_len=12, global_batch=6, num_classes=3, identities=IDENTITIES,
            process_index=p, process_count=2,
        )

    state = make(0).state()
    with pytest.raises(HoloError, match=r"state is for rows \[0, 1, 2\] but this process reads rows 3..5"):
        make(1).restore(state)
    with pytest.raises(HoloError, match=r"expected \['batches_done', 'row'\]"):
        make(0).restore({"row": state["row"], "stream_doc": state["batches_done"]})
    with pytest.raises(HoloError, match=r"not one count >= 0"):
        make(0).restore({"row": state["row"], "batches_done": np.asarray([1, 2, 1], np.int32)})
