"""The generated toxicity set (data.source=embedded for task.kind=sequence_classification)."""

import collections
import re

import pytest

from holo_jax.config import TrainConfig, override
from holo_jax.data import ByteTokenizer, ClassificationBatches, EmbeddedSource, ExampleSource
from holo_jax.data.civil_comments import IDENTITY_COLUMNS
from holo_jax.data.embedded_toxicity import (
    AMBIGUOUS_SHARE, BACKGROUND_TOXIC_FRACTION, EMBEDDED_IDENTITIES, SURFACE_FORMS, TRAIN_BACKGROUND_EXAMPLES,
    TRAIN_EXAMPLES_PER_IDENTITY, TRAIN_TOXIC_FRACTION, VALIDATION_FRAMES_PER_CLASS, EmbeddedToxicitySource,
)
from holo_jax.errors import HoloError
from holo_jax.train.tasks import NextTokenLM, SequenceClassification

# The table of the module docstring, restated: (examples, toxic) per identity and for the background.
TRAIN_TABLE = {
    **dict.fromkeys(("homosexual_gay_or_lesbian", "muslim", "black", "transgender"), (300, 240)),
    **dict.fromkeys(("female", "jewish", "latino", "white"), (300, 150)),
    **dict.fromkeys(("male", "heterosexual", "bisexual", "christian", "hindu", "buddhist", "atheist", "asian"),
                    (300, 60)),
    None: (3000, 600),
}


@pytest.fixture(scope="module")
def splits():
    return {split: EmbeddedToxicitySource(split) for split in ("train", "validation")}


def _counts(source):
    counts = collections.defaultdict(lambda: [0, 0])  # group -> [examples, toxic]
    for i in range(source.num_documents()):
        example = source.example(i)
        assert len(example.identities) <= 1
        group = example.identities[0] if example.identities else None
        counts[group][0] += 1
        counts[group][1] += example.label
    return {group: tuple(c) for group, c in counts.items()}


def _forms_pattern(names):
    forms = [form for name in names for kind in SURFACE_FORMS[name] for form in kind]
    return re.compile(r"\b(" + "|".join(map(re.escape, sorted(forms, key=len, reverse=True))) + r")\b", re.I)


def test_is_an_example_source_covering_three_axes(splits):
    for source in splits.values():
        assert isinstance(source, ExampleSource) and source.num_classes == 2
        assert source.identity_vocabulary == EMBEDDED_IDENTITIES
        assert all(0 <= source.example(i).label <= 1 for i in range(source.num_documents()))
        assert source.document(7) == source.example(7).text
    assert set(EMBEDDED_IDENTITIES) <= set(IDENTITY_COLUMNS)
    assert {"male", "female", "transgender", "christian", "jewish", "muslim", "hindu", "buddhist", "atheist",
            "black", "white", "asian", "latino"} <= set(EMBEDDED_IDENTITIES)
    assert all(len(plural) >= 3 and len(singular) >= 4 for plural, singular in SURFACE_FORMS.values())


def test_deterministic_from_the_seed(splits):
    for split, source in splits.items():
        again = EmbeddedToxicitySource(split)
        assert again.fingerprint == source.fingerprint
        assert [again.example(i) for i in range(50)] == [source.example(i) for i in range(50)]
    other = EmbeddedToxicitySource("train", seed=1)
    assert other.fingerprint != splits["train"].fingerprint
    assert _counts(other) == _counts(splits["train"])  # the planted rates hold for every seed
    assert len(set(splits[s].fingerprint for s in splits)) == 2


def test_splits_are_disjoint_in_text_and_texts_are_unique(splits):
    texts = {split: [s.document(i) for i in range(s.num_documents())] for split, s in splits.items()}
    for split in texts:
        assert len(set(texts[split])) == len(texts[split])
    assert not set(texts["train"]) & set(texts["validation"])


def test_train_carries_the_stated_bias(splits):
    counts = _counts(splits["train"])
    assert counts == TRAIN_TABLE
    assert splits["train"].num_documents() == 7800
    for name, (n, toxic) in counts.items():  # the module's constants say the same
        fraction = TRAIN_TOXIC_FRACTION[name] if name else BACKGROUND_TOXIC_FRACTION
        assert n == (TRAIN_EXAMPLES_PER_IDENTITY if name else TRAIN_BACKGROUND_EXAMPLES)
        assert toxic == round(n * fraction)


def test_validation_is_balanced_with_the_same_frames_for_every_identity(splits):
    source = splits["validation"]
    counts = _counts(source)
    assert counts == {group: (2 * VALIDATION_FRAMES_PER_CLASS, VALIDATION_FRAMES_PER_CLASS)
                      for group in (*EMBEDDED_IDENTITIES, None)}
    assert source.num_documents() == 4080
    # Dixon's design: with the identity term replaced, every identity has the same (frame, label) pairs.
    subject = {name: _forms_pattern([name]) for name in EMBEDDED_IDENTITIES}
    frames = collections.defaultdict(collections.Counter)
    for i in range(source.num_documents()):
        example = source.example(i)
        if example.identities:
            name = example.identities[0]
            frame = subject[name].sub("<X>", example.text, count=1)
            frames[name][frame, example.label] += 1
    reference = frames["female"]
    assert sum(reference.values()) == 240 and set(reference.values()) == {1}
    for name in EMBEDDED_IDENTITIES:
        assert frames[name] == reference, name

def test_every_identity_appears_in_its_examples_and_no_other(splits):
    own = {name: _forms_pattern([name]) for name in EMBEDDED_IDENTITIES}
    any_identity = _forms_pattern(EMBEDDED_IDENTITIES)
    for source in splits.values():
        for i in range(source.num_documents()):
            example = source.example(i)
            found = {m.group(0).lower() for m in any_identity.finditer(example.text)}
            if example.identities:
                (name,) = example.identities
                assert own[name].search(example.text), example
                assert all(own[name].fullmatch(f) for f in found), example
            else:
                assert not found, example


def test_ambiguous_share_is_a_quarter():
    assert AMBIGUOUS_SHARE == 0.25 and round(VALIDATION_FRAMES_PER_CLASS * AMBIGUOUS_SHARE) == 30


def _cfg(*assignments):
    return override(TrainConfig(), ["task.kind=sequence_classification", "data.source=embedded",
                                    "global_batch=4", "model.max_len=32", *assignments])


def test_the_config_check_accepts_classification_on_embedded():
    _cfg("task.identities=female,muslim").check()
    with pytest.raises(HoloError, match=r"reads labelled .jsonl examples .*embedded"):
        _cfg("data.source=c4").check()


def test_the_classification_task_opens_it():
    task = SequenceClassification(2, ("female", "muslim", "black"))
    it = task.open_batches(_cfg(), "validation", ByteTokenizer(), shard_index=0, shard_count=1)
    assert isinstance(it, ClassificationBatches)
    assert isinstance(it.source, EmbeddedToxicitySource) and it.source.split == "validation"
    batch = next(it)
    assert batch["tokens"].shape == (4, 32) and batch["identities"].shape == (4, 3)
    assert set(batch["label"].tolist()) <= {0, 1}
    # The LM task keeps the pydoc corpus for data.source=embedded.
    lm = NextTokenLM().open_batches(override(TrainConfig(), ["global_batch=4", "model.max_len=16"]), "train",
                                    ByteTokenizer(), shard_index=0, shard_count=1)
    assert isinstance(lm.source, EmbeddedSource)


@pytest.mark.parametrize("task, message", [
    (SequenceClassification(3), r"^data.source=embedded \(sequence_classification\) has 2 classes"),
    (SequenceClassification(2, ("other_gender",)), r"^task.identities names other_gender, which the embedded "
                                                    r"toxicity set does not cover; use: male, female, .*latino\.$"),
    (SequenceClassification(2, (), "insult"), r"task.label_key is `insult`; leave task.label_key at `label`\.$"),
])
def test_the_classification_task_refuses_what_it_cannot_serve(task, message):
    with pytest.raises(HoloError, match=message):
        task.open_batches(_cfg(), "train", ByteTokenizer(), shard_index=0, shard_count=1)


@pytest.mark.parametrize("bias", [0.0, 0.5])
def test_the_planted_bias_is_configurable_and_validation_does_not_change(bias):
    from holo_jax.data.embedded_toxicity import BACKGROUND_TOXIC_FRACTION, TRAIN_TOXIC_FRACTION

    train = EmbeddedToxicitySource("train", bias=bias)
    for name, full in TRAIN_TOXIC_FRACTION.items():
        rows = [train.example(i) for i in range(train.num_documents()) if name in train.example(i).identities]
        expected = round(len(rows) * (BACKGROUND_TOXIC_FRACTION + bias * (full - BACKGROUND_TOXIC_FRACTION)))
        assert sum(e.label for e in rows) == expected, name
    assert EmbeddedToxicitySource("validation", bias=bias).fingerprint == EmbeddedToxicitySource("validation").fingerprint
    assert train.fingerprint != EmbeddedToxicitySource("train").fingerprint


def test_a_bias_outside_0_1_is_one_sentence():
    with pytest.raises(HoloError, match=r"bias is 1\.5; use a strength from 0"):
        EmbeddedToxicitySource("train", bias=1.5)
