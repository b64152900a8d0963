"""Scoring many short texts fast: `Classifier.score`'s forward on length buckets.

The rule search, the precision checks and the faithfulness curves score tens of perturbed texts
per example, most of them much shorter than `max_len` (half the words deleted). Scoring every text
padded to `max_len` spends most of the work on padding, so texts are sorted by token count and
each batch runs at the smallest multiple of `BUCKET` tokens that holds its longest text. This is
the same function: the decoder is causal and the classifier pools the last real token (or the mean
over real tokens), so tokens after `lengths` never reach the output; only float rounding of the
different matmul shapes differs (tests: equal to `Classifier.score` to 1e-5). One compile per
bucket (at most max_len / BUCKET), one batch shape each.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

BUCKET = 16


class BucketedScorer:
    """`score(texts)` -> P(label 1) per text, in order, as `Classifier.score`."""

    def __init__(self, classifier, batch_size: int = 64):
        self.classifier, self.batch_size = classifier, int(batch_size)
        task, model = classifier.task, classifier.model

        def forward(params, tokens_bt, lengths_b):
            out = task.apply(model, params, {"tokens": tokens_bt, "lengths": lengths_b}, deterministic=True)
            return jax.nn.softmax(out["logits"].astype(jnp.float32), axis=-1)[:, 1]

        self._forward = jax.jit(forward)

    def compile_all(self) -> None:
        """Compile every bucket's shape now (so a timing never includes a compile)."""
        clf = self.classifier
        for t in range(BUCKET, clf.max_len + BUCKET, BUCKET):
            t = min(t, clf.max_len)
            self._forward(clf.params, np.zeros((self.batch_size, t), np.int32),
                          np.ones(self.batch_size, np.int32)).block_until_ready()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        clf, b = self.classifier, self.batch_size
        pad_id = int(getattr(clf.tokenizer, "pad_id", clf.tokenizer.eos_id))
        ids = [clf.encode(t) for t in texts]
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty(len(texts), np.float32)
        for start in range(0, len(texts), b):
            rows = order[start:start + b]
            longest = max(len(ids[i]) for i in rows)
            t = min(clf.max_len, -(-longest // BUCKET) * BUCKET)
            tokens = np.full((b, t), pad_id, np.int32)
            lengths = np.ones(b, np.int32)  # rows past the chunk: one pad token each, dropped below
            for r, i in enumerate(rows):
                tokens[r, :len(ids[i])] = ids[i]
                lengths[r] = len(ids[i])
            out[rows] = np.asarray(self._forward(clf.params, tokens, lengths))[:len(rows)]
        return out
