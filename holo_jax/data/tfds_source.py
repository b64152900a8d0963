"""TensorFlow Datasets corpora by our names, read forwards with tf.data.

| data.source  | prepared as (TFDS name)                     | splits served                         |
|--------------|---------------------------------------------|---------------------------------------|
| c4           | c4/en                                       | train, validation                     |
| realnews     | c4/realnewslike                             | train, validation                     |
| wikitext103  | huggingface:wikitext/wikitext-103-raw-v1    | train, validation                     |
| bookcorpus   | huggingface:bookcorpus                      | train only: its last 0.1% is our      |
|              |                                             | validation                            |

WikiText stores one line (paragraph or heading) per record and BookCorpus one sentence. As
documents they would be cut apart by the packing, which gives row r of the batch documents r,
r + B, r + 2B, ...: a 2048-token row would hold 2048/B-spaced lines of unrelated text. So a
document of these datasets is a run of `records_per_document` consecutive records (in stored
order: consecutive lines of one article, consecutive sentences of one book, except at the
runs' edges), which keeps the index arithmetic (document i = records [iK, iK + K)) stateless
and the slicing below cheap.

Reading never needs the network. Datasets with TFDS code (c4) are opened through that
code; datasets of the `huggingface:` namespace are opened from their prepared files by the
`name/config` directory they were written to, because `tfds.builder("huggingface:...")`
imports the `datasets` package and queries the Hugging Face Hub even to read prepared data.

Documents are read by slicing the split (`train[start:end]`): TFDS turns the slice into
file instructions, so resuming at document `start` skips whole record files and only steps
over (without parsing) the records before `start` inside the first file it opens.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping

from holo_jax.data.documents import check_split
from holo_jax.errors import HoloError


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
    tfds_name: str  # The name `tfds.builder` / `tfds build` prepares it under.
    on_disk: tuple[str, ...]  # `name/config` directories it may sit in under data_dir.
    splits: Mapping[str, str]  # Our split -> the dataset's split.
    # For datasets without a validation split: the tail fraction of "train" served as our
    # validation split (the rest is our train split). Contiguous, so slicing stays cheap.
    validation_tail: float = 0.0
    # Consecutive records joined into one document (see the module docstring), and the text
    # put between them: WikiText's lines carry their own newline; sentences need a space.
    records_per_document: int = 1
    record_separator: str = ""

    def prepare_command(self, data_dir: str | None) -> str:
        if self.tfds_name.startswith("huggingface:"):
            # The `tfds build` CLI resolves names through the community index, which does not
            # cover the huggingface: namespace; only `tfds.builder` handles it.
            dir_arg = f", data_dir={data_dir!r}" if data_dir else ""
            return (
                'pip install datasets && python -c "import tensorflow_datasets as tfds; '
                f"tfds.builder('{self.tfds_name}'{dir_arg}).download_and_prepare()\""
            )
        return f"tfds build {self.tfds_name}" + (f" --data_dir {data_dir}" if data_dir else "")


_TRAIN_VALIDATION = {"train": "train", "validation": "validation"}

TFDS_DATASETS: dict[str, TfdsDataset] = {
    "c4": TfdsDataset("c4/en", ("c4/en",), _TRAIN_VALIDATION),
    "realnews": TfdsDataset("c4/realnewslike", ("c4/realnewslike",), _TRAIN_VALIDATION),
    # The Hub has since moved these under organisations (Salesforce/wikitext,
    # bookcorpus/bookcorpus); TFDS names such copies `org__name`, so look there too.
    # 64 lines of WikiText-103 are ~1,300 words on average (103M words in 1.8M lines);
    # 128 BookCorpus sentences ~1,700 words (~985M words in 74M sentences).
    "wikitext103": TfdsDataset(
        "huggingface:wikitext/wikitext-103-raw-v1",
        ("wikitext/wikitext_103_raw_v1", "salesforce__wikitext/wikitext_103_raw_v1"),
        _TRAIN_VALIDATION,
        records_per_document=64,
    ),
    "bookcorpus": TfdsDataset(
        "huggingface:bookcorpus",
        ("bookcorpus", "bookcorpus__bookcorpus"),
        {"train": "train", "validation": "train"},
        validation_tail=0.001,
        records_per_document=128,
        record_separator=" ",
    ),
}


def _import_tfds() -> Any:
    """Import TFDS (and TensorFlow) on first use: the import costs seconds that the embedded
    and local-file sources should not pay."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        # TensorFlow must not claim GPU memory that JAX is about to use.
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        # Raised once TensorFlow has initialised its devices (someone used it already);
        # the device list can no longer change, and a CPU-only build has no GPU anyway.
        pass
    return tfds


class TfdsSource:
    """Sequential documents of one split of a prepared TFDS dataset (see the module table)."""

    def __init__(self, name: str, split: str = "train", text_key: str = "text", data_dir: str | None = None):
        check_split(split)
        if name not in TFDS_DATASETS:
            raise HoloError(f"unknown TFDS source `{name}`; valid ones are: {', '.join(TFDS_DATASETS)}.")
        self.name, self.split, self.text_key = name, split, text_key
        dataset = TFDS_DATASETS[name]
        self._tfds = _import_tfds()
        self._builder = self._open_prepared(dataset, data_dir)
        features = list(self._builder.info.features.keys())
        if text_key not in features:
            raise HoloError(
                f"TFDS dataset `{dataset.tfds_name}` has no `{text_key}` feature (it has: "
                f"{', '.join(features)}); set data.text_key to the text feature."
            )
        self._group, self._separator = dataset.records_per_document, dataset.record_separator
        self._tfds_split = dataset.splits[split]
        total = self._builder.info.splits[self._tfds_split].num_examples
        self._begin, self._end = 0, total
        if dataset.validation_tail:
            cut = total - max(1, int(total * dataset.validation_tail))
            self._begin, self._end = (0, cut) if split == "train" else (cut, total)

    def _open_prepared(self, dataset: TfdsDataset, data_dir: str | None) -> Any:
        for on_disk_name in dataset.on_disk:
            try:
                builder = self._tfds.builder(on_disk_name, data_dir=data_dir)
            except self._tfds.core.DatasetNotFoundError:
                continue  # No code and no files under this name.
            if builder.is_prepared():
                return builder
        where = data_dir or "TFDS's default data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
        raise HoloError(
            f"TFDS dataset `{dataset.tfds_name}` (data.source={self.name}) is not prepared in {where}; "
            f"prepare it once with: {dataset.prepare_command(data_dir)}"
        )

    def num_documents(self) -> int:
        return -(-(self._end - self._begin) // self._group)

    def iterate(self, start: int) -> Iterator[tuple[int, str]]:
        if start >= self.num_documents():
            return
        records = self._records(self._begin + start * self._group)
        if self._group == 1:
            yield from enumerate(records, start=start)
            return
        run: list[str] = []
        index = start
        for text in records:
            run.append(text)
            if len(run) == self._group:
                yield index, self._separator.join(run)
                run, index = [], index + 1
        if run:
            yield index, self._separator.join(run)

    def _records(self, first: int) -> Iterator[str]:
        """The texts of records `first` .. end of our part of the split, in stored order."""
        ds = self._builder.as_dataset(
            split=f"{self._tfds_split}[{first}:{self._end}]",
            shuffle_files=False,  # The document order is part of the resumable state.
            # Auto-caching would keep small splits in memory for a single forward pass.
            read_config=self._tfds.ReadConfig(try_autocache=False),
        )
        key = self.text_key
        for text in ds.map(lambda ex: ex[key]).as_numpy_iterator():
            yield text.decode("utf-8")

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r})"
