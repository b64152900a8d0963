"""Tokenizers: byte round trips, a tiny trained SentencePiece model, and bad specs."""

import numpy as np
import pytest
import sentencepiece as spm

from holo_jax.data import ByteTokenizer, EmbeddedSource, SentencePieceTokenizer, make_tokenizer
from holo_jax.errors import HoloError

TEXTS = ["", "hello", "naïve café — 東京 🚀\n\ttabs", "\x00control\x7f"]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    assert ids.tolist() == list(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_byte_special_ids_and_decode_skips_them():
    tok = ByteTokenizer()
    assert (tok.vocab_size, tok.eos_id, tok.pad_id) == (258, 256, 257)
    ids = np.concatenate([tok.encode("ab"), [tok.eos_id], tok.encode("é"), [tok.pad_id, tok.pad_id]])
    assert tok.decode(ids) == "abé"
    with pytest.raises(ValueError, match="258"):
        tok.decode([300])


def test_byte_decode_of_truncated_character_does_not_fail():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("é")[:1]) == "\ufffd"


def _train_sentencepiece(tmp_path, **options) -> str:
    """Train a ~100-piece model on a few KB of the embedded corpus."""
    corpus = tmp_path / "corpus.txt"
    source = EmbeddedSource("train")
    corpus.write_text("\n".join(source.document(i) for i in range(8)), encoding="utf-8")
    prefix = tmp_path / "sp"
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=100,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
        **options,
    )
    return f"{prefix}.model"


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    return _train_sentencepiece(tmp_path_factory.mktemp("sp"))


def test_sentencepiece_round_trip(sp_model):
    tok = make_tokenizer(sp_model)
    assert isinstance(tok, SentencePieceTokenizer)
    assert tok.vocab_size == 100
    assert 0 <= tok.eos_id < 100
    text = "The assert statement is a convenient way to insert debugging assertions."
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and len(ids) > 0
    assert tok.decode(ids) == text
    # End-of-document tokens in the stream decode to nothing.
    assert tok.decode(np.concatenate([ids, [tok.eos_id]])) == text


def test_sentencepiece_without_eos_is_rejected(tmp_path):
    path = _train_sentencepiece(tmp_path, eos_id=-1)
    with pytest.raises(HoloError, match="no end-of-sentence piece"):
        SentencePieceTokenizer(path)


def test_make_tokenizer_byte_and_bad_paths(tmp_path):
    assert isinstance(make_tokenizer("byte"), ByteTokenizer)
    missing = tmp_path / "nope.model"
    with pytest.raises(HoloError, match=f"`{missing}` is neither `byte` nor `embedded_toxicity_bpe` nor an existing file"):
        make_tokenizer(str(missing))
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(HoloError, match="is not a readable SentencePiece model"):
        make_tokenizer(str(garbage))
