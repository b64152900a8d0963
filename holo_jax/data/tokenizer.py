"""Tokenizers: text <-> int32 token ids.

Two implementations share one small interface (`Tokenizer`): a byte-level tokenizer that
needs no files (the default, matching `ModelConfig.vocab_size = 258`) and a SentencePiece
model loaded from a `.model` file, either a user's or one shipped with the package and named
(`embedded_toxicity_bpe`, the toxicity classifier's: holo_jax/data/toxicity_tokenizer.py).
The packing pipeline only needs `encode` and `eos_id`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from holo_jax.errors import HoloError


class Tokenizer(Protocol):
    """What the data pipeline and the samplers need from a tokenizer."""

    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text` as int32, without any end-of-document token."""
        ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `ids`; special tokens (end-of-document, padding) produce no text."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: ids 0..255 are bytes, 256 ends a document, 257 pads.

    Lossless for any text and needs no vocabulary file, which is what the offline default
    configuration wants.
    """

    eos_id: int = 256
    pad_id: int = 257
    vocab_size: int = 258

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}")
        # A model can emit byte sequences that are not valid UTF-8 (e.g. half a character
        # before EOS); show them as U+FFFD instead of failing the whole decode.
        return ids[ids < 256].astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


class SentencePieceTokenizer:
    """A trained SentencePiece model; its end-of-sentence piece separates documents."""

    def __init__(self, model_path: str | os.PathLike[str]):
        import sentencepiece as spm  # Imported here so byte-only runs do not need it loaded.

        self.model_path = os.fspath(model_path)
        if not os.path.isfile(self.model_path):
            raise HoloError(
                f"SentencePiece model file `{self.model_path}` does not exist; check data.tokenizer."
            )
        try:
            self._sp = spm.SentencePieceProcessor(model_file=self.model_path)
        except (OSError, RuntimeError) as e:
            raise HoloError(
                f"`{self.model_path}` is not a readable SentencePiece model ({e}); "
                "point data.tokenizer at a .model file written by SentencePieceTrainer."
            ) from None
        eos = self._sp.eos_id()
        if eos < 0:
            raise HoloError(
                f"SentencePiece model `{self.model_path}` has no end-of-sentence piece, which packing "
                "needs to separate documents; retrain it with an eos id (e.g. --eos_id=2)."
            )
        self.eos_id: int = int(eos)
        self.vocab_size: int = int(self._sp.get_piece_size())

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text, out_type=int), dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        # SentencePiece renders control pieces (eos, pad, bos) as empty text.
        return self._sp.decode([int(i) for i in np.asarray(ids).reshape(-1)])

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.model_path!r})"


# SentencePiece models shipped in the package, by the name `data.tokenizer` gives them; a name
# rather than a path keeps config.json valid wherever the checkout lives.
SHIPPED_SENTENCEPIECE: dict[str, Path] = {
    # Fit by holo_jax/data/toxicity_tokenizer.py.
    "embedded_toxicity_bpe": Path(__file__).parent / "assets" / "embedded_toxicity_bpe.model",
}
BUILTIN_TOKENIZERS: tuple[str, ...] = ("byte", *SHIPPED_SENTENCEPIECE)


def make_tokenizer(spec: str) -> ByteTokenizer | SentencePieceTokenizer:
    """`"byte"` for the byte tokenizer, the name of a shipped SentencePiece model
    (`SHIPPED_SENTENCEPIECE`), otherwise the path of a SentencePiece `.model` file."""
    if spec == "byte":
        return ByteTokenizer()
    if spec in SHIPPED_SENTENCEPIECE:
        return SentencePieceTokenizer(SHIPPED_SENTENCEPIECE[spec])
    if not os.path.isfile(spec):
        raise HoloError(
            f"tokenizer `{spec}` is neither {' nor '.join(f'`{n}`' for n in BUILTIN_TOKENIZERS)} nor an existing "
            "file; set data.tokenizer to one of those names or to the path of a SentencePiece .model file."
        )
    return SentencePieceTokenizer(spec)
