"""Packing, process sharding and exact resume of `PackedBatches`, on in-memory sources."""

import numpy as np
import pytest

from holo_jax.data import STATE_KEYS, ByteTokenizer, PackedBatches
from holo_jax.data.feeds import ShuffledFeed
from holo_jax.errors import HoloError

SEQ_LEN = 16
TOK = ByteTokenizer()


class ListSource:
    """Random access over a list; records which documents were read."""

    def __init__(self, docs):
        self.docs = docs
        self.reads = []

    def num_documents(self):
        return len(self.docs)

    def document(self, index):
        self.reads.append(index)
        return self.docs[index]

    def __repr__(self):
        return f"ListSource({len(self.docs)} docs)"


class ForwardSource:
    """Forward-only reading over a list (like TFDS); records where each pass started."""

    def __init__(self, docs):
        self.docs = docs
        self.starts = []

    def num_documents(self):
        return len(self.docs)

    def iterate(self, start):
        self.starts.append(start)
        for i in range(start, len(self.docs)):
            yield i, self.docs[i]

    def __repr__(self):
        return f"ForwardSource({len(self.docs)} docs)"


def make_docs(n=37, seed=0):
    """Documents from empty to ~3 rows long, each tagged with its index, some non-ASCII."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        length = 0 if i % 9 == 4 else int(rng.integers(1, 3 * SEQ_LEN))
        body = "".join(rng.choice(list("abcdefgh é€"), size=length))
        docs.append(f"<{i}>{body}" if length else "")
    return docs


SOURCES = {"random_access": ListSource, "sequential": ForwardSource}


def take(it, k):
    return [next(it) for _ in range(k)]


def global_batches(source, k, process_count, *, global_batch=8, seed=0):
    """k global batches assembled from the local batches of `process_count` iterators."""
    local = [
        take(
            PackedBatches(
                source,
                TOK,
                seq_len=SEQ_LEN,
                global_batch=global_batch,
                process_index=p,
                process_count=process_count,
                seed=seed,
            ),
            k,
        )
        for p in range(process_count)
    ]
    return [
        {
            key: np.concatenate([local[p][step][key] for p in range(process_count)])
            for key in ("inputs", "targets")
        }
        for step in range(k)
    ]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
        np.testing.assert_array_equal(x["targets"], y["targets"])


def expected_stream(docs, order, row, global_batch, n_tokens):
    """What row stream `row` must emit: its documents g = row, row + B, ... in `order`, each + EOS."""
    pieces, total, g = [], 0, row
    while total < n_tokens:
        ids = TOK.encode(docs[order(g)])
        if len(ids):
            pieces += [ids, [TOK.eos_id]]
            total += len(ids) + 1
        g += global_batch
    return np.concatenate(pieces)[:n_tokens]


@pytest.mark.parametrize("kind", SOURCES)
def test_rows_are_the_stream_of_their_documents(kind):
    docs = make_docs()
    source, k, b = SOURCES[kind](docs), 9, 4
    batches = take(PackedBatches(source, TOK, seq_len=SEQ_LEN, global_batch=b, seed=5), k)
    if kind == "random_access":
        order = ShuffledFeed(ListSource(docs), seed=5).source_index
    else:
        order = lambda g: g % len(docs)  # noqa: E731 - stored order, epoch after epoch
    for batch in batches:
        assert batch["inputs"].shape == batch["targets"].shape == (b, SEQ_LEN)
        assert batch["inputs"].dtype == batch["targets"].dtype == np.int32
        # targets are the inputs shifted by one token.
        np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])
    for row in range(b):
        stream = np.concatenate([np.append(x["inputs"][row], x["targets"][row, -1]) for x in batches])
        np.testing.assert_array_equal(stream, expected_stream(docs, order, row, b, k * (SEQ_LEN + 1)))


def test_shuffled_order_is_a_fresh_permutation_every_epoch():
    n = 50
    feed = ShuffledFeed(ListSource(make_docs(n)), seed=1)
    epochs = [[feed.source_index(e * n + i) for i in range(n)] for e in range(6)]
    assert all(sorted(order) == list(range(n)) for order in epochs)
    assert len({tuple(order) for order in epochs}) == 6
    assert epochs[0] == [ShuffledFeed(ListSource(make_docs(n)), seed=1).source_index(i) for i in range(n)]
    assert epochs[0] != [ShuffledFeed(ListSource(make_docs(n)), seed=2).source_index(i) for i in range(n)]


@pytest.mark.parametrize("kind", SOURCES)
def test_global_batch_is_independent_of_process_count(kind):
    docs = make_docs()
    single = global_batches(SOURCES[kind](docs), 7, 1)
    for process_count in (2, 4):
        assert_same_batches(global_batches(SOURCES[kind](docs), 7, process_count), single)


def test_a_process_reads_only_the_documents_of_its_rows():
    docs = make_docs(n=1000)  # All reads stay in epoch 0, where g <-> document is one-to-one.
    order = ShuffledFeed(ListSource(docs), seed=0).source_index
    virtual_index = {order(g): g for g in range(len(docs))}
    source = ListSource(docs)
    take(PackedBatches(source, TOK, seq_len=SEQ_LEN, global_batch=8, process_index=1, process_count=4), 5)
    read = [virtual_index[d] for d in source.reads]
    # Process 1 of 4 owns rows 2 and 3: each reads g = row, row + 8, row + 16, ... once, in order.
    for row in (2, 3):
        mine = [g for g in read if g % 8 == row]
        assert mine == list(range(row, row + 8 * len(mine), 8)) and len(mine) >= 2
    assert all(g % 8 in (2, 3) for g in read)


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("stop_after", [0, 1, 4])
def test_restore_continues_exactly(kind, stop_after):
    docs = make_docs()
    kwargs = dict(seq_len=SEQ_LEN, global_batch=4, seed=3)
    uninterrupted = take(PackedBatches(SOURCES[kind](docs), TOK, **kwargs), stop_after + 5)

    first = PackedBatches(SOURCES[kind](docs), TOK, **kwargs)
    take(first, stop_after)
    state = first.state()
    assert set(state) == set(STATE_KEYS)
    assert all(v.shape == (4,) and v.dtype == np.int32 for v in state.values())
    resumed = PackedBatches(SOURCES[kind](docs), TOK, **kwargs)
    resumed.restore(state)
    assert_same_batches(take(resumed, 5), uninterrupted[stop_after:])


def test_sequential_restore_rereads_from_the_slowest_stream_only():
    docs = make_docs()
    first = PackedBatches(ForwardSource(docs), TOK, seq_len=SEQ_LEN, global_batch=4)
    take(first, 6)
    state = first.state()
    source = ForwardSource(docs)
    resumed = PackedBatches(source, TOK, seq_len=SEQ_LEN, global_batch=4)
    resumed.restore(state)
    next(resumed)
    current = state["stream_doc"] * 4 + state["row"]
    assert source.starts[-1] == current.min() % len(docs)


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("before, after", [(1, 2), (2, 1), (4, 2)])
def test_restore_after_process_count_change(kind, before, after):
    docs = make_docs()
    b, k = 8, 3
    uninterrupted = global_batches(SOURCES[kind](docs), 2 * k, 1, global_batch=b)

    def make(p, count):
        return PackedBatches(
            SOURCES[kind](docs), TOK, seq_len=SEQ_LEN, global_batch=b, process_index=p, process_count=count
        )

    old = [make(p, before) for p in range(before)]
    for it in old:
        take(it, k)
    # What the trainer's checkpoint holds: the global state, concatenated along rows.
    saved = {key: np.concatenate([it.state()[key] for it in old]) for key in STATE_KEYS}
    new, rows = [], b // after
    for p in range(after):
        it = make(p, after)
        it.restore({key: v[p * rows : (p + 1) * rows] for key, v in saved.items()})
        new.append(take(it, k))
    resumed = [
        {key: np.concatenate([new[p][s][key] for p in range(after)]) for key in ("inputs", "targets")}
        for s in range(k)
    ]
    assert_same_batches(resumed, uninterrupted[k:])


def test_global_batch_must_divide_among_processes():
    with pytest.raises(
        HoloError, match=r"global_batch \(6\) must be divisible by the number of processes \(4\)"
    ):
        PackedBatches(ListSource(make_docs()), TOK, seq_len=8, global_batch=6, process_count=4)


def test_source_without_documents_is_rejected():
    with pytest.raises(HoloError, match=r"ListSource\(0 docs\) has no documents"):
        PackedBatches(ListSource([]), TOK, seq_len=8, global_batch=2)


def test_source_of_only_empty_documents_is_rejected():
    it = PackedBatches(ForwardSource(["", "", ""]), TOK, seq_len=8, global_batch=2)
    with pytest.raises(HoloError, match="read 3 empty documents in a row"):
        next(it)


def test_restore_checks_rows_keys_and_data():
    docs = make_docs()
    it = PackedBatches(
        ListSource(docs), TOK, seq_len=SEQ_LEN, global_batch=4, process_index=1, process_count=2
    )
    take(it, 2)
    state = it.state()
    other = PackedBatches(
        ListSource(docs), TOK, seq_len=SEQ_LEN, global_batch=4, process_index=0, process_count=2
    )
    with pytest.raises(HoloError, match=r"state is for rows \[2, 3\] but this process reads rows 0..1"):
        other.restore(state)
    with pytest.raises(HoloError, match="incompatible data pipeline"):
        it.restore({"row": state["row"]})
    # The same positions over much shorter documents point past their ends.
    short = PackedBatches(
        ListSource(["ab"] * len(docs)), TOK, seq_len=SEQ_LEN, global_batch=4, process_index=1, process_count=2
    )
    short.restore({**state, "doc_offset": np.full(2, 5, np.int32)})
    with pytest.raises(HoloError, match="source or tokenizer changed"):
        next(short)
