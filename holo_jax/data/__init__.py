"""Text data: tokenizers, document sources and the packed, resumable batch pipeline."""

from holo_jax.data.documents import SPLITS, RandomAccessSource, SequentialSource, Source, holdout_split
from holo_jax.data.local_files import LocalFilesSource
from holo_jax.data.pipeline import STATE_KEYS, PackedBatches
from holo_jax.data.sources import SOURCE_NAMES, EmbeddedSource, make_source
from holo_jax.data.tfds_source import TFDS_DATASETS, TfdsSource
from holo_jax.data.tokenizer import ByteTokenizer, SentencePieceTokenizer, Tokenizer, make_tokenizer
from holo_jax.data.examples import Example, ExampleSource, LocalExamplesSource
from holo_jax.data.classification import CLASSIFICATION_STATE_KEYS, ClassificationBatches
from holo_jax.data.civil_comments import CivilCommentsSource
from holo_jax.data.embedded_toxicity import EMBEDDED_IDENTITIES, EmbeddedToxicitySource

__all__ = [
    "SOURCE_NAMES",
    "SPLITS",
    "STATE_KEYS",
    "TFDS_DATASETS",
    "ByteTokenizer",
    "EmbeddedSource",
    "LocalFilesSource",
    "PackedBatches",
    "RandomAccessSource",
    "SentencePieceTokenizer",
    "SequentialSource",
    "Source",
    "TfdsSource",
    "Tokenizer",
    "holdout_split",
    "make_source",
    "make_tokenizer",
    "CLASSIFICATION_STATE_KEYS",
    "ClassificationBatches",
    "Example",
    "ExampleSource",
    "LocalExamplesSource",
    "CivilCommentsSource",
    "EMBEDDED_IDENTITIES",
    "EmbeddedToxicitySource",
]
