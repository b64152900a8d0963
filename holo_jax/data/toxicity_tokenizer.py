"""The subword tokenizer of the embedded toxicity classifier: a SentencePiece BPE model fit to the
embedded train split, shipped in the package as `assets/embedded_toxicity_bpe.model` and named by
`data.tokenizer=embedded_toxicity_bpe`.

Why a subword model and not bytes: the classifier of `experiments/configs/debias.py` (2 layers x 128)
has to learn toxicity from a few thousand short template sentences. Over bytes it must first learn to
spell, and on the evaluation split (new combinations of the same word lists) it reached overall AUC
0.80-0.83; over these pieces, which are whole words for everything the generator writes, the same
model reaches ~0.96 (BENCHMARKS.md, issue 12). Text outside the generator's vocabulary (the held-out
set, a user's file) still encodes: rare words fall back to shorter pieces and, at worst, to UTF-8 bytes
(`byte_fallback`), so nothing maps to an unknown id.

Why shipped rather than fit at run time: a run's token ids must mean the same thing to every process,
every resume and every later reader of its checkpoint (explanations, fairness_eval, drift), so the
model is one fixed file, named in config.json by its built-in name rather than by a path that moves
with the checkout. `python -m holo_jax.data.toxicity_tokenizer --out FILE` fits it again;
tests/data/test_toxicity_tokenizer.py checks that doing so reproduces the shipped file byte for byte.

Settings, and why:
- BPE with 2,000 pieces: SentencePiece's unigram trainer cannot exceed ~920 pieces on so small a
  text (it needs seed substrings) and then splits common words ("wi" "th"); BPE at 1,200 still split
  9% of the evaluation words, at 2,000 every generator word is one piece (contractions aside:
  punctuation is a piece of its own).
- `normalization_rule_name=identity`: the text is used as written, so the pieces of a word are the
  word's own characters (what the explanation engine aligns words by), and the file carries no
  NFKC table (29 KB instead of ~270 KB).
- ids: 0 unknown (unused with byte fallback), 1 begin (unused), 2 end of document, 3 padding.
- one thread, a fixed seed sentence order: the fit is deterministic.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from holo_jax.data.tokenizer import SHIPPED_SENTENCEPIECE

NAME = "embedded_toxicity_bpe"
MODEL_PATH = SHIPPED_SENTENCEPIECE[NAME]
VOCAB_SIZE = 2000
FIT_SEED = 0  # the embedded set's seed whose train split the model is fit to (bias 1: the documented rates)

_TRAINER_SETTINGS = dict(
    vocab_size=VOCAB_SIZE, model_type="bpe", byte_fallback=True, character_coverage=1.0,
    normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=3,
    num_threads=1, minloglevel=2,
)


def fit(out: str | os.PathLike[str]) -> Path:
    """Fit the tokenizer to the embedded train split and write the `.model` file to `out`."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    from holo_jax.data.embedded_toxicity import EmbeddedToxicitySource

    source = EmbeddedToxicitySource("train", seed=FIT_SEED)
    texts = [source.example(i).text for i in range(source.num_documents())]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "m")
        spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=prefix, **_TRAINER_SETTINGS)
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(Path(prefix + ".model").read_bytes())
    # The trainer records the (temporary) path it wrote to; cleared, the same fit gives the same bytes.
    proto.trainer_spec.ClearField("model_prefix")
    out.write_bytes(proto.SerializeToString())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m holo_jax.data.toxicity_tokenizer", description=fit.__doc__)
    p.add_argument("--out", default=str(MODEL_PATH), help=f"where to write the model (default: {MODEL_PATH})")
    args = p.parse_args(argv)
    print(fit(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
