"""The shipped subword tokenizer of the toxicity classifier (holo_jax/data/toxicity_tokenizer.py)."""
from __future__ import annotations

import re
import string

import pytest

from holo_jax.data import make_tokenizer
from holo_jax.data.embedded_toxicity import EmbeddedToxicitySource
from holo_jax.data.heldout_toxicity import HeldoutToxicitySource
from holo_jax.data.toxicity_tokenizer import MODEL_PATH, NAME, VOCAB_SIZE, fit


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(NAME)


def normalise_keep_case(word: str) -> str:
    return word.strip(string.punctuation)


def _texts(source, n=None):
    return [source.example(i).text for i in range(source.num_documents() if n is None else n)]


def test_fitting_again_reproduces_the_shipped_file(tmp_path):
    # The file is a build product of the generator: if the word lists change, it must be refit
    # (python -m holo_jax.data.toxicity_tokenizer) and this says so.
    assert fit(tmp_path / "m.model").read_bytes() == MODEL_PATH.read_bytes()


def test_the_name_loads_the_shipped_model(tokenizer):
    assert tokenizer.vocab_size == VOCAB_SIZE
    assert tokenizer.eos_id == 2
    assert tokenizer.encode("").size == 0


def test_generator_words_are_whole_pieces(tokenizer):
    # Evaluation texts are new combinations of the generator's words: nearly every word is one piece
    # (punctuation is a piece of its own, so contractions such as "don't" are the exception).
    texts = _texts(EmbeddedToxicitySource("validation", seed=3), 400)
    words = [w for t in texts for w in map(normalise_keep_case, t.split()) if w]
    whole = [w for w in words if len(tokenizer.encode(" " + w)) == 1]
    assert len(whole) / len(words) > 0.95


@pytest.mark.parametrize("source", [EmbeddedToxicitySource("validation", seed=0), HeldoutToxicitySource("validation")],
                         ids=["embedded", "heldout"])
def test_every_text_round_trips(tokenizer, source):
    # Byte fallback: words the fit never saw (all of the held-out set's, accents, emoji) still encode.
    texts = _texts(source) + ["Ünïcödé café 🙂 naïve", "double  spaces "]
    for text in texts:
        ids = tokenizer.encode(text)
        assert ids.min() >= 0 and ids.max() < VOCAB_SIZE and 0 not in ids  # never the unknown id
        assert tokenizer.decode(ids) == re.sub(" +", " ", text).strip(" ")  # SentencePiece collapses spaces
