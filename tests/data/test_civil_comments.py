"""Civil Comments (`data.source=civil_comments`) under `tfds.testing.mock_data`.

As in test_tfds_source.py, a mocked builder without metadata files has no splits, so the
fixture writes the real builder's `dataset_info.json`/`features.json` (its code's version and
features) for small split sizes, and `_fake_as_dataset` serves ratings chosen to sit on both
sides of the 0.5 thresholds (0.4999, exactly 0.5, ...), which random mock values would not.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import dataset_info, splits

from holo_jax.config import DataConfig, TrainConfig, override
from holo_jax.data import (
    SOURCE_NAMES,
    ByteTokenizer,
    CivilCommentsSource,
    ClassificationBatches,
    Example,
    ExampleSource,
    make_source,
)
from holo_jax.data import civil_comments
from holo_jax.data.civil_comments import IDENTITY_COLUMNS, LABEL_COLUMNS
from holo_jax.errors import HoloError
from holo_jax.train.tasks import NextTokenLM, SequenceClassification

TFDS_NAME = "civil_comments/CivilCommentsIdentities"
SIZES = {"train": 23, "validation": 9, "test": 5}
# Ratings cycled through by the fake data: each threshold's neighbours and the threshold itself.
RATINGS = (0.0, 0.4999, 0.5, 0.5001, 1.0, 0.2, 0.75)


def fake_text(split: str, index: int) -> str:
    if index % 6 == 4:
        return ""  # Civil Comments has empty comments; they are examples all the same.
    return f"{split} comment #{index} " + "naïve wörds " * (index % 4)


def fake_rating(split: str, column: str, index: int) -> float:
    """float32 like the prepared data, so the expectations threshold the same values."""
    offset = 3 if split == "validation" else 0
    position = LABEL_COLUMNS.index(column) if column in LABEL_COLUMNS else 7 + IDENTITY_COLUMNS.index(column)
    return float(np.float32(RATINGS[(index + offset + 2 * position) % len(RATINGS)]))


def expected_example(split: str, index: int, label_column: str = "toxicity") -> Example:
    return Example(
        fake_text(split, index),
        int(fake_rating(split, label_column, index) >= 0.5),
        tuple(c for c in IDENTITY_COLUMNS if fake_rating(split, c, index) >= 0.5),
    )


RATING_FN = {"fn": fake_rating}  # Tests swap it to serve other ratings for the same texts.


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    """Stands in for `FileReaderBuilder._as_dataset`: every feature of the real builder, with
    `fake_text`/`fake_rating` where they matter and zeros or "" elsewhere."""
    del decoders, read_config, shuffle_files
    n = self.info.splits[split].num_examples
    columns = {}
    for key, feature in self.info.features.items():
        if key == "text":
            columns[key] = tf.constant([fake_text(split, i) for i in range(n)], tf.string)
        elif key in LABEL_COLUMNS or key in IDENTITY_COLUMNS:
            columns[key] = tf.constant([RATING_FN["fn"](split, key, i) for i in range(n)], tf.float32)
        elif feature.np_dtype == np.dtype(object):  # Text features: id, parent_text, ...
            columns[key] = tf.constant([f"other {key} {i}" for i in range(n)], tf.string)
        else:
            columns[key] = tf.zeros([n], feature.tf_dtype)
    return tf.data.Dataset.from_tensor_slices(columns)


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tfds"))
    code = tfds.builder(TFDS_NAME)  # TFDS has code for civil_comments: its real version and features.
    name, config = TFDS_NAME.split("/")
    path = os.path.join(root, name, config, str(code.version))
    identity = dataset_info.DatasetIdentity(
        name=name, version=code.version, data_dir=path, module_name=__name__, config_name=config
    )
    info = tfds.core.DatasetInfo(builder=identity, features=code.info.features)
    info.set_splits(
        splits.SplitDict([splits.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in SIZES.items()])
    )
    os.makedirs(path)
    info.write_to_directory(path)
    return root


@pytest.fixture
def mocked(metadata_dir):
    with tfds.testing.mock_data(data_dir=metadata_dir, as_dataset_fn=_fake_as_dataset):
        yield metadata_dir


@pytest.mark.parametrize("split", ["train", "validation"])
def test_labels_and_memberships_follow_the_thresholds(mocked, split):
    source = CivilCommentsSource(split, data_dir=mocked)
    assert isinstance(source, ExampleSource)
    assert source.num_classes == 2 and source.identity_vocabulary == IDENTITY_COLUMNS
    assert source.num_documents() == SIZES[split]
    got = [source.example(i) for i in range(source.num_documents())]
    assert got == [expected_example(split, i) for i in range(SIZES[split])]
    assert [source.document(i) for i in range(SIZES[split])] == [fake_text(split, i) for i in range(SIZES[split])]
    # The fixture reaches both sides of each threshold, so the cases above are not vacuous:
    # 0.4999 is not toxic / not a member, exactly 0.5 is.
    assert {e.label for e in got} == {0, 1} and any(e.identities for e in got)
    below = next(i for i in range(SIZES[split]) if fake_rating(split, "toxicity", i) == np.float32(0.4999))
    at = next(i for i in range(SIZES[split]) if fake_rating(split, "toxicity", i) == 0.5)
    assert got[below].label == 0 and got[at].label == 1
    below = next(i for i in range(SIZES[split]) if fake_rating(split, "muslim", i) == np.float32(0.4999))
    at = next(i for i in range(SIZES[split]) if fake_rating(split, "muslim", i) == 0.5)
    assert "muslim" not in got[below].identities and "muslim" in got[at].identities


def test_reads_real_prepared_files_without_mocks(tmp_path):
    """The same reader on real record files, written where `tfds build` puts them, with the builder's features."""
    code = tfds.builder(TFDS_NAME)
    name, config = TFDS_NAME.split("/")

    def record(split, i):
        ratings = {c: fake_rating(split, c, i) for c in (*LABEL_COLUMNS, *IDENTITY_COLUMNS)}
        return {**ratings, "text": fake_text(split, i), "id": str(i), "parent_text": "", "parent_id": 0,
                "article_id": 1, "publication_id": "1", "created_date": "2017-01-01"}

    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, config=config, version=str(code.version), data_dir=str(tmp_path), features=code.info.features,
        split_datasets={s: [(i, record(s, i)) for i in range(SIZES[s])] for s in ("train", "validation")},
        disable_shuffling=True,  # Keep the stored order equal to the list order.
    )
    for split in ("train", "validation"):
        source = CivilCommentsSource(split, data_dir=str(tmp_path))
        assert [source.example(i) for i in range(source.num_documents())] == [
            expected_example(split, i) for i in range(SIZES[split])
        ]


def test_another_rated_attribute_can_be_the_label(mocked):
    source = CivilCommentsSource("train", label_column="insult", data_dir=mocked)
    assert [source.example(i) for i in range(SIZES["train"])] == [
        expected_example("train", i, "insult") for i in range(SIZES["train"])
    ]
    assert [source.example(i).label for i in range(7)] != [expected_example("train", i).label for i in range(7)]


def test_constants_agree_with_fairness_and_the_tfds_builder():
    """data defines them (it must not import fairness); fairness and TFDS must say the same."""
    from holo_jax import fairness
    from tensorflow_datasets.text import civil_comments as builder_module

    assert IDENTITY_COLUMNS == fairness.IDENTITIES == tuple(builder_module.IDENTITY_LABELS)
    assert civil_comments.TOXIC_THRESHOLD == fairness.TOXIC_THRESHOLD
    assert civil_comments.MEMBERSHIP_THRESHOLD == fairness.MEMBERSHIP_THRESHOLD
    assert set(LABEL_COLUMNS) <= set(tfds.builder(TFDS_NAME).info.features)


def test_classification_batches_are_process_count_invariant(mocked):
    def batches(process_index, process_count, k):
        it = ClassificationBatches(
            CivilCommentsSource("train", data_dir=mocked), ByteTokenizer(), seq_len=16, global_batch=4,
            num_classes=2, identities=("male", "muslim", "white"), process_index=process_index,
            process_count=process_count, seed=3,
        )
        return [next(it) for _ in range(k)]

    k = 14  # 56 rows over 23 examples: crosses two epoch boundaries.
    single = batches(0, 1, k)
    halves = [batches(p, 2, k) for p in range(2)]
    for step in range(k):
        for field in single[step]:
            np.testing.assert_array_equal(
                np.concatenate([halves[0][step][field], halves[1][step][field]]), single[step][field]
            )
    # The batches carry the thresholded labels and memberships of the examples they hold.
    labels = np.concatenate([b["label"] for b in single[:6]])  # first 24 rows: epoch 0 and 1 row more
    members = np.concatenate([b["identities"] for b in single[:6]])
    assert sorted(labels[:23].tolist()) == sorted(expected_example("train", i).label for i in range(23))
    assert members[:23, 1].sum() == sum("muslim" in expected_example("train", i).identities for i in range(23))


def test_fingerprint_is_stable_and_follows_the_examples(mocked, monkeypatch):
    first = CivilCommentsSource("train", data_dir=mocked).fingerprint
    assert len(first) == 64 and CivilCommentsSource("train", data_dir=mocked).fingerprint == first
    assert CivilCommentsSource("validation", data_dir=mocked).fingerprint != first
    assert CivilCommentsSource("train", label_column="insult", data_dir=mocked).fingerprint != first

    def one_membership_more(split, column, index):  # example 0 now mentions `male`
        return 0.9 if (column, index) == ("male", 0) else fake_rating(split, column, index)

    assert "male" not in expected_example("train", 0).identities
    monkeypatch.setitem(RATING_FN, "fn", one_membership_more)
    assert CivilCommentsSource("train", data_dir=mocked).fingerprint != first

    def same_side_of_the_threshold(split, column, index):  # ratings move, examples do not
        rating = fake_rating(split, column, index)
        return 0.9 if rating == 1.0 else rating

    monkeypatch.setitem(RATING_FN, "fn", same_side_of_the_threshold)
    assert CivilCommentsSource("train", data_dir=mocked).fingerprint == first


def test_ratings_outside_zero_one_are_one_sentence(mocked, monkeypatch):
    monkeypatch.setitem(RATING_FN, "fn", lambda s, c, i: float("nan") if (c, i) == ("jewish", 5) else 0.1)
    with pytest.raises(HoloError, match=r"^example 5 of `civil_comments/CivilCommentsIdentities` split train "
                                        r"has a rating outside \[0, 1\].*tfds build") as error:
        CivilCommentsSource("train", data_dir=mocked)
    assert "\n" not in str(error.value)


def test_bad_label_column_and_text_key_are_one_sentence(mocked):
    with pytest.raises(HoloError, match="task.label_key `toxic` is not a rated attribute of Civil Comments; "
                                        "use one of: toxicity"):
        CivilCommentsSource("train", label_column="toxic", data_dir=mocked)
    with pytest.raises(HoloError, match="has no `comment_text` feature .*parent_text.*set data.text_key"):
        CivilCommentsSource("train", text_key="comment_text", data_dir=mocked)


def test_unprepared_dataset_names_the_command_that_prepares_it(tmp_path):
    with pytest.raises(HoloError) as error:
        CivilCommentsSource("validation", data_dir=str(tmp_path))
    message = str(error.value)
    assert message == (
        f"TFDS dataset `{TFDS_NAME}` (data.source=civil_comments) is not prepared in {tmp_path}; "
        f"prepare it once with: tfds build {TFDS_NAME} --data_dir {tmp_path}"
    )


def _cfg(*assignments):
    return override(TrainConfig(), ["data.source=civil_comments", "global_batch=4", "model.max_len=16", *assignments])


def test_the_lm_task_refuses_it_in_one_sentence(mocked):
    assert "civil_comments" in SOURCE_NAMES
    sentence = (r"^data.source=civil_comments holds labelled comments for task.kind=sequence_classification, not "
                r"documents for language modelling; set task.kind=sequence_classification or pick an LM source: "
                r"embedded, files, c4, .*\.$")
    with pytest.raises(HoloError, match=sentence):
        make_source(DataConfig(source="civil_comments", tfds_data_dir=mocked), "train")
    with pytest.raises(HoloError, match=sentence):
        NextTokenLM().open_batches(_cfg(f"data.tfds_data_dir={mocked}"), "train", ByteTokenizer(),
                                   shard_index=0, shard_count=1)


def test_the_classification_task_opens_it(mocked):
    task = SequenceClassification(2, ("female", "black"))
    it = task.open_batches(_cfg(f"data.tfds_data_dir={mocked}"), "validation", ByteTokenizer(),
                           shard_index=0, shard_count=1)
    assert isinstance(it.source, CivilCommentsSource) and it.source.split == "validation"
    batch = next(it)
    assert batch["tokens"].shape == (4, 16) and batch["identities"].shape == (4, 2)
    # task.label_key names the rated attribute; its default `label` is toxicity.
    insult = SequenceClassification(2, (), "insult").open_batches(
        _cfg(f"data.tfds_data_dir={mocked}"), "train", ByteTokenizer(), shard_index=0, shard_count=1)
    assert insult.source.label_column == "insult" and it.source.label_column == "toxicity"


@pytest.mark.parametrize("task, assignments, message", [
    (SequenceClassification(3), (), r"^data.source=civil_comments has 2 classes \(toxic or not\), but task.num_classes "
                                    r"is 3; set task.num_classes=2\.$"),
    (SequenceClassification(2, ("muslims",)), (), r"^task.identities names muslims, which Civil Comments does not "
                                                  r"annotate; use: male, female, .*other_disability\.$"),
    (SequenceClassification(2), ("data.source=c4",),
     r"^task.kind=sequence_classification reads labelled .jsonl examples \(data.source=files, .*\), Civil "
     r"Comments \(data.source=civil_comments\) or the embedded toxicity set \(data.source=embedded\), not the "
     r"unlabelled text of data.source=c4; set one of those\.$"),
])
def test_the_classification_task_refuses_what_it_cannot_serve(mocked, task, assignments, message):
    with pytest.raises(HoloError, match=message):
        task.open_batches(_cfg(f"data.tfds_data_dir={mocked}", *assignments), "train", ByteTokenizer(),
                          shard_index=0, shard_count=1)
