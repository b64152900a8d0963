"""The mixture source: which component serves each virtual document, exact resume, process
independence, and one-sentence refusal of bad settings."""
from __future__ import annotations

import json

import numpy as np
import pytest

from holo_jax.config import DataConfig
from holo_jax.data import ByteTokenizer, PackedBatches, make_source
from holo_jax.data.mixture import MixtureSource, second_share
from holo_jax.errors import HoloError


def _jsonl(path, prefix, n, length=31):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"text": f"{prefix}{i:05d}".ljust(length, prefix[0])}) + "\n")
    return str(path)


@pytest.fixture
def two_domains(tmp_path):
    return _jsonl(tmp_path / "a.jsonl", "A", 300), _jsonl(tmp_path / "b.jsonl", "B", 300)


def _cfg(a, b, **kw):
    return DataConfig(source="mixture", mixture=(a, b), **kw)


def test_switch_serves_the_first_component_before_the_switch_document_and_the_second_after(two_domains):
    a, b = two_domains
    source = make_source(_cfg(a, b, mixture_switch_document=40), "train")
    assert isinstance(source, MixtureSource)
    texts = [t for _, t in zip(range(80), source.iterate(0))]
    assert [t[1][0] for t in texts] == ["A"] * 40 + ["B"] * 40
    assert [g for g, _ in texts] == list(range(80))
    # Resuming the forward read at any document gives the same documents.
    assert [t for _, t in zip(range(20), source.iterate(30))] == texts[30:50]


def test_ramp_share_rises_linearly_and_the_draw_is_a_pure_function_of_the_document(two_domains):
    a, b = two_domains
    assert [second_share(g, "ramp", 100, 50) for g in (0, 100, 125, 150, 400)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    source = make_source(_cfg(a, b, mixture_schedule="ramp", mixture_switch_document=100,
                              mixture_ramp_documents=2000), "train")
    picks = np.array([source.component_of(g) for g in range(1100, 1100 + 2000)])
    assert 0.45 < picks[:200].mean() < 0.65  # share ~0.55 near g = 1100 + 100 ... ramping on
    again = make_source(_cfg(a, b, mixture_schedule="ramp", mixture_switch_document=100,
                             mixture_ramp_documents=2000), "train")
    assert all(again.component_of(g) == p for g, p in zip(range(1100, 3100), picks))


def test_packed_batches_over_a_mixture_resume_exactly_and_do_not_depend_on_processes(two_domains):
    a, b = two_domains
    cfg = _cfg(a, b, mixture_switch_document=64)
    tok = ByteTokenizer()
    make = lambda p=0, n=1: PackedBatches(make_source(cfg, "train"), tok, seq_len=31, global_batch=8,  # noqa: E731
                                          process_index=p, process_count=n)
    whole = make()
    batches = [next(whole) for _ in range(14)]
    # A document is 31 bytes + end-of-document = one row, so every row switches after its 8th:
    # batches 0..7 hold only A documents, batch 8 on only B documents.
    assert not (batches[7]["inputs"] == ord("B")).any()
    assert (batches[8]["inputs"][:, 0] == ord("B")).all() and not (batches[8]["inputs"] == ord("A")).any()
    resumed = make()
    [next(resumed) for _ in range(5)]
    state = resumed.state()
    fresh = make()
    fresh.restore(state)
    for want in batches[5:]:
        np.testing.assert_array_equal(next(fresh)["inputs"], want["inputs"])
    halves = [make(p, 2) for p in (0, 1)]
    for want in batches:
        got = np.concatenate([next(h)["inputs"] for h in halves])
        np.testing.assert_array_equal(got, want["inputs"])


def test_the_embedded_corpus_can_be_a_component(two_domains):
    _, b = two_domains
    source = make_source(_cfg("embedded", b, mixture_switch_document=3), "train")
    first = [text for _, (_, text) in zip(range(4), source.iterate(0))]
    assert not first[0].startswith("B") and first[3].startswith("B")


@pytest.mark.parametrize("kw,message", [
    (dict(mixture=("embedded",)), "needs two components"),
    (dict(mixture=("embedded", "nope")), "neither an LM source"),
    (dict(mixture=("embedded", "missing.txt")), "does not exist"),
    (dict(mixture=("embedded", "c4"), mixture_schedule="ramp"), "mixture_ramp_documents >= 1"),
])
def test_bad_mixture_settings_are_refused_in_one_sentence(kw, message):
    with pytest.raises(HoloError, match=message):
        DataConfig(source="mixture", **kw).check_relations("data")


def test_mixture_fields_without_source_mixture_are_refused():
    with pytest.raises(HoloError, match="set data.source=mixture"):
        DataConfig(mixture=("embedded", "c4")).check_relations("data")
