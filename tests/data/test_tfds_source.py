"""TFDS sources under `tfds.testing.mock_data`, and the error for unprepared datasets.

Two things `mock_data`'s defaults do not cover, and how these tests handle them:
- Without metadata files a mocked builder has no splits (so no `num_documents`), and the
  `huggingface:` datasets have no TFDS code to fall back on. So each test writes the
  dataset's real-layout metadata (`dataset_info.json`, `features.json`) for its split sizes
  under a temporary data_dir and mocks with `data_dir=` that directory.
- The default fake reader ignores split slices like `train[5:]`, which our resume relies
  on; `_fake_as_dataset` serves exactly the examples TFDS's own file instructions select.
"""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import dataset_info, splits

from holo_jax.config import DataConfig
from holo_jax.data import (
    TFDS_DATASETS,
    ByteTokenizer,
    PackedBatches,
    SequentialSource,
    TfdsSource,
    make_source,
)
from holo_jax.errors import HoloError

# Our name -> (directory written under data_dir, TFDS split sizes).
LAYOUT = {
    "c4": ("c4/en", {"train": 40, "validation": 12}),
    "realnews": ("c4/realnewslike", {"train": 30, "validation": 9}),
    "wikitext103": ("wikitext/wikitext_103_raw_v1", {"train": 25, "validation": 7, "test": 5}),
    "bookcorpus": ("bookcorpus", {"train": 2000}),
}
# bookcorpus has only "train"; its last 0.1% (2 of 2000 examples) is our validation split.
EXPECTED_RANGES = {
    "c4": {"train": ("train", 0, 40), "validation": ("validation", 0, 12)},
    "realnews": {"train": ("train", 0, 30), "validation": ("validation", 0, 9)},
    "wikitext103": {"train": ("train", 0, 25), "validation": ("validation", 0, 7)},
    "bookcorpus": {"train": ("train", 0, 1998), "validation": ("train", 1998, 2000)},
}


def as_documents(name: str, records: list[str]) -> list[str]:
    """Records grouped into documents the way the dataset's definition says (module docstring)."""
    spec = TFDS_DATASETS[name]
    k = spec.records_per_document
    return [spec.record_separator.join(records[i:i + k]) for i in range(0, len(records), k)]


def fake_text(dataset: str, split: str, index: int) -> str:
    if index % 5 == 3:
        return ""  # Real corpora have empty records (wikitext's blank lines).
    return f"{dataset} {split} #{index} " + "wörds " * (index % 7)


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    """Stands in for `FileReaderBuilder._as_dataset`, honouring the slice in `split`."""
    del decoders, read_config, shuffle_files
    (instruction,) = self.info.splits[split].file_instructions
    base = split.split("[")[0]
    texts = [
        fake_text(self.name, base, i) for i in range(instruction.skip, instruction.skip + instruction.take)
    ]
    empty = [""] * len(texts)
    return tf.data.Dataset.from_tensor_slices(
        {key: tf.constant(texts if key == "text" else empty, tf.string) for key in self.info.features.keys()}
    )


def write_metadata(root, on_disk_name: str, split_sizes: dict[str, int]) -> None:
    """Write the metadata `tfds build` leaves in data_dir/name[/config]/version."""
    name, _, config = on_disk_name.partition("/")
    if name == "c4":  # TFDS has code for c4: use its real version and features.
        code = tfds.builder(on_disk_name)
        version, features = str(code.version), code.info.features
    else:  # What the Hugging Face conversion writes: one `text` string feature.
        version, features = "1.0.0", tfds.features.FeaturesDict({"text": tfds.features.Text()})
    path = os.path.join(root, name, *([config] if config else []), version)
    identity = dataset_info.DatasetIdentity(
        name=name,
        version=tfds.core.Version(version),
        data_dir=path,
        module_name=__name__,
        config_name=config or None,
    )
    info = tfds.core.DatasetInfo(builder=identity, features=features)
    info.set_splits(
        splits.SplitDict(
            [splits.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in split_sizes.items()]
        )
    )
    os.makedirs(path)
    info.write_to_directory(path)


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    for on_disk_name, sizes in LAYOUT.values():
        write_metadata(str(root), on_disk_name, sizes)
    return str(root)


@pytest.fixture
def mocked_tfds(metadata_dir):
    with tfds.testing.mock_data(data_dir=metadata_dir, as_dataset_fn=_fake_as_dataset):
        yield metadata_dir


@pytest.mark.parametrize("name", LAYOUT)
@pytest.mark.parametrize("split", ["train", "validation"])
def test_reads_the_documents_of_each_split(mocked_tfds, name, split):
    source = TfdsSource(name, split, data_dir=mocked_tfds)
    assert isinstance(source, SequentialSource)
    tfds_split, begin, end = EXPECTED_RANGES[name][split]
    dataset_name = LAYOUT[name][0].split("/")[0]
    expected = as_documents(name, [fake_text(dataset_name, tfds_split, i) for i in range(begin, end)])
    assert source.num_documents() == len(expected)
    assert list(source.iterate(0)) == list(enumerate(expected))
    # Resuming part-way reads from there on, not from the start.
    start = len(expected) // 2
    assert list(source.iterate(start)) == list(enumerate(expected))[start:]
    assert list(source.iterate(len(expected))) == []


def test_reads_real_prepared_files_without_mocks(tmp_path):
    """The same reader on real record files, as `download_and_prepare` leaves them."""
    texts = {
        split: [fake_text("wikitext", split, i) for i in range(n)]
        for split, n in (("train", 30), ("validation", 6))
    }
    tfds.dataset_builders.store_as_tfds_dataset(
        name="wikitext",
        config="wikitext_103_raw_v1",
        version="1.0.0",
        data_dir=str(tmp_path),
        features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        split_datasets={
            split: [(i, {"text": t}) for i, t in enumerate(docs)] for split, docs in texts.items()
        },
        disable_shuffling=True,  # Keep the stored order equal to the list order.
    )
    for split, records in texts.items():
        source = TfdsSource("wikitext103", split, data_dir=str(tmp_path))
        docs = as_documents("wikitext103", records)
        assert list(source.iterate(0)) == list(enumerate(docs))


def test_line_records_are_grouped_into_documents_and_resume_by_group(mocked_tfds, monkeypatch):
    """WikiText lines (and BookCorpus sentences) become runs of consecutive records, so packing
    keeps an article's lines together; resuming at document i starts at record i * K."""
    monkeypatch.setitem(TFDS_DATASETS, "wikitext103",
                        dataclasses.replace(TFDS_DATASETS["wikitext103"], records_per_document=4))
    source = TfdsSource("wikitext103", "train", data_dir=mocked_tfds)
    records = [fake_text("wikitext", "train", i) for i in range(25)]
    docs = list(source.iterate(0))
    assert source.num_documents() == 7 and len(docs) == 7  # 6 full runs of 4, then the last record
    assert docs[1] == (1, "".join(records[4:8])) and docs[-1] == (6, records[24])
    assert list(source.iterate(5)) == docs[5:]


def test_make_source_builds_tfds_sources(mocked_tfds):
    source = make_source(DataConfig(source="realnews", tfds_data_dir=mocked_tfds), "validation")
    assert isinstance(source, TfdsSource) and source.num_documents() == 9


def test_hugging_face_copies_under_an_organisation_are_found(tmp_path):
    write_metadata(str(tmp_path), "salesforce__wikitext/wikitext_103_raw_v1", {"train": 4, "validation": 2})
    with tfds.testing.mock_data(data_dir=str(tmp_path), as_dataset_fn=_fake_as_dataset):
        source = TfdsSource("wikitext103", "validation", data_dir=str(tmp_path))
        assert [text for _, text in source.iterate(0)] == as_documents(
            "wikitext103", [fake_text("salesforce__wikitext", "validation", i) for i in range(2)])


def test_packing_a_tfds_source_is_process_invariant_and_resumable(mocked_tfds):
    def batches(process_index, process_count, k, state=None):
        it = PackedBatches(
            TfdsSource("c4", "train", data_dir=mocked_tfds),
            ByteTokenizer(),
            seq_len=24,
            global_batch=4,
            process_index=process_index,
            process_count=process_count,
        )
        if state is not None:
            it.restore(state)
        return [next(it)["inputs"] for _ in range(k)], it.state()

    single, _ = batches(0, 1, 6)
    halves = [batches(p, 2, 6)[0] for p in range(2)]
    for step in range(6):
        np.testing.assert_array_equal(np.concatenate([halves[0][step], halves[1][step]]), single[step])
    _, state = batches(0, 1, 3)
    resumed, _ = batches(0, 1, 3, state=state)
    for got, want in zip(resumed, single[3:], strict=True):
        np.testing.assert_array_equal(got, want)


def test_missing_text_feature_lists_the_features(mocked_tfds):
    with pytest.raises(HoloError, match="has no `body` feature .*content-length.*set data.text_key"):
        TfdsSource("c4", text_key="body", data_dir=mocked_tfds)


@pytest.mark.parametrize(
    "name, command",
    [
        ("c4", "tfds build c4/en --data_dir {d}"),
        ("realnews", "tfds build c4/realnewslike --data_dir {d}"),
        (
            "wikitext103",
            "tfds.builder('huggingface:wikitext/wikitext-103-raw-v1', data_dir='{d}').download_and_prepare()",
        ),
        ("bookcorpus", "tfds.builder('huggingface:bookcorpus', data_dir='{d}').download_and_prepare()"),
    ],
)
def test_unprepared_dataset_names_the_command_that_prepares_it(tmp_path, name, command):
    with pytest.raises(HoloError) as error:
        TfdsSource(name, "train", data_dir=str(tmp_path))
    message = str(error.value)
    tfds_name = TFDS_DATASETS[name].tfds_name
    assert message.startswith(
        f"TFDS dataset `{tfds_name}` (data.source={name}) is not prepared in {tmp_path};"
    )
    assert command.format(d=tmp_path) in message
    assert "\n" not in message
