"""Words: the unit every explanation is given in, whatever the tokenizer.

A text's words are `text.split()`: its maximal runs of non-whitespace characters (Python's
`str.isspace`), in order. Everything the explanation engine says about a text is about these words:

- **Deleting words** (faithfulness, rule precision) means exactly: remove the words at the given
  positions from `text.split()` and re-join the rest with single spaces
  (`" ".join(w for i, w in enumerate(text.split()) if i not in removed)`). `delete_words` and
  `keep_words` are that rule and nothing else, so anyone holding `--explanations-out` can rebuild
  every perturbed text and re-score it with `experiments.fairness_eval --scores-out`.
- **Token -> word alignment** is by prefixes, which works for any tokenizer that has `encode`:
  word i owns the tokens that `encode(text[:end of word i])` adds over `encode(text[:end of word
  i-1])`. For the byte tokenizer this is exactly the word's UTF-8 bytes plus the whitespace before
  it; for SentencePiece it is the word's pieces (its leading "▁" included). Tokens cut off by
  `max_len` belong to no word, so a word the model never saw gets relevance 0.
- **Matching a rule's words** against another text (global rules, coverage) uses the normalised
  form `normalise(word)`: lower case, surrounding punctuation stripped, so `contains("idiot")`
  matches "Idiot," too. Deletion never normalises: it works on the text's own words.
"""
from __future__ import annotations

import string
from typing import Callable, Sequence

import numpy as np

NO_WORD = -1  # a token that belongs to no word (text cut by max_len, padding)
_STRIP = string.punctuation + "“”‘’«»…"


def split_words(text: str) -> list[str]:
    """The whitespace-separated words of `text`, in order."""
    return text.split()


def delete_words(words: Sequence[str], removed) -> str:
    """The text without the words at positions `removed`, re-joined with single spaces."""
    removed = set(int(i) for i in removed)
    return " ".join(w for i, w in enumerate(words) if i not in removed)


def keep_words(words: Sequence[str], kept) -> str:
    """The text of only the words at positions `kept` (in their order), joined with single spaces."""
    kept = set(int(i) for i in kept)
    return " ".join(w for i, w in enumerate(words) if i in kept)


def normalise(word: str) -> str:
    """The form rules match words by: lower case, surrounding punctuation removed ("" if nothing is left)."""
    return word.strip(_STRIP).lower()


def word_ends(text: str) -> list[int]:
    """The character offset just past each word of `text` (same words as `split_words`)."""
    ends, inside = [], False
    for i, ch in enumerate(text):
        if ch.isspace():
            if inside:
                ends.append(i)
            inside = False
        else:
            inside = True
    if inside:
        ends.append(len(text))
    return ends


def token_word_index(text: str, encode: Callable[[str], np.ndarray], n_tokens: int) -> np.ndarray:
    """int32 [n_tokens]: the word each of the text's first `n_tokens` tokens belongs to, or NO_WORD.

    `encode` is the classifier's tokenizer's `encode`; `n_tokens` the number of tokens the model
    reads (the encoding cut to max_len). Prefix counts are made monotone (a tokenizer may re-segment
    a prefix's end differently from the whole text; the count never goes back)."""
    out = np.full(n_tokens, NO_WORD, dtype=np.int32)
    start = 0
    for i, end in enumerate(word_ends(text)):
        if start >= n_tokens:
            break
        count = max(start, min(len(encode(text[:end])), n_tokens))
        out[start:count] = i
        start = count
    return out
