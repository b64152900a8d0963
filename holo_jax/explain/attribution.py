"""Word relevance of a restored classifier's decision, by six methods, in one jitted, batched
function over a device mesh.

Every method scores the decision the model takes (its predicted class c) through the target
`f = logit_c - logit_other` (the log-odds of c). Token scores are summed into word scores
(holo_jax.explain.words: whitespace-separated words, any tokenizer).

- `raw_attention`: the last layer's attention, averaged over heads, in the row(s) of the pooled
  position (the last real token for `pooling=last`; the mean of the real rows for `mean`).
- `attention_rollout` (Abnar & Zuidema 2020): per layer `0.5 * mean_h(A) + 0.5 * I`, multiplied from
  the first layer to the last, then the pooled row.
- `grad_attention_rollout` (Chefer et al. 2021, the generic rule for self-attention, their eq. 5-6):
  `R = I; R += mean_h((dF/dA * A)^+) @ R` layer by layer; the pooled row of `R - I`: the identity is
  each token's own residual path, which carries no gradient evidence and would otherwise make the
  pooled token (the text's last byte) the most relevant one in every text.
- `grad_cam`: Grad-CAM (Selvaraju et al. 2017) on the last block's final-normed activations H
  [t, d]: `relu(sum_d alpha_d H_td)` with `alpha_d` = the gradient averaged over the real tokens.
- `integrated_gradients` (Sundararajan et al. 2017) on the token embeddings (positions kept) from the
  all-zero embedding, Gauss-Legendre quadrature with `ig_steps` nodes, all steps of all rows in one batch; its
  completeness error `|sum(IG) - (f(x) - f(baseline))|` is returned per example.
- `random`: uniform word scores from a key folded with the example's index (so they do not depend
  on batching or the mesh).

The gradients come from flax `perturb` handles that the model carries only with
`capture_attention=True` (attention weights, token embeddings, final hidden states): the
training model has none, so training pays nothing for them. Why not Captum: it is PyTorch-only and
its users report running out of memory on attribution; here each method is part of one XLA
program whose batch is sharded over the mesh's data axes.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from holo_jax.errors import HoloError
from holo_jax.explain.words import NO_WORD, split_words, token_word_index

METHODS = ("raw_attention", "attention_rollout", "grad_attention_rollout", "grad_cam",
           "integrated_gradients", "random")
GRADIENT_METHODS = ("grad_attention_rollout", "grad_cam", "integrated_gradients")
DEFAULT_IG_STEPS = 16
_BATCH_AXES = ("data", "fsdp")


@dataclasses.dataclass
class Attributions:
    """Per-example results of `Attributor.explain`, in input order (host numpy)."""

    words: list[list[str]]
    relevance: dict[str, list[np.ndarray]]  # method -> one float32 [n_words] per example
    predicted: np.ndarray  # int32 [n]: the class the model decides (argmax of its logits)
    probability: np.ndarray  # float32 [n]: P(label 1)
    ig_completeness_error: np.ndarray | None  # float32 [n] absolute error, or None without IG
    ig_target_delta: np.ndarray | None  # float32 [n]: f(x) - f(baseline), the scale of that error


def _pooled_query(lengths_b: jax.Array, t: int, pooling: str) -> jax.Array:
    """[b, t] weights of the query rows the classifier pools (they sum to 1)."""
    if pooling == "mean":
        real_bt = (jnp.arange(t)[None, :] < lengths_b[:, None]).astype(jnp.float32)
        return real_bt / jnp.maximum(real_bt.sum(1, keepdims=True), 1.0)
    return jax.nn.one_hot(jnp.clip(lengths_b - 1, 0, t - 1), t, dtype=jnp.float32)


def rollout(attention_lbts: jax.Array) -> jax.Array:
    """Abnar & Zuidema's attention rollout of head-averaged attention [l, b, t, s] -> [b, t, s]."""
    t = attention_lbts.shape[-1]
    eye = jnp.eye(t, dtype=jnp.float32)

    def layer(r_bts, a_bts):
        a_bts = 0.5 * a_bts + 0.5 * eye
        a_bts = a_bts / a_bts.sum(-1, keepdims=True)
        return jnp.einsum("bts,bsu->btu", a_bts, r_bts), None

    init = jnp.broadcast_to(eye, attention_lbts.shape[1:])
    out, _ = jax.lax.scan(layer, init, attention_lbts)
    return out


def gradient_weighted_rollout(attention_lbnts: jax.Array, gradient_lbnts: jax.Array) -> jax.Array:
    """Chefer et al. 2021's relevance R [b, t, s] (identity included): R = I, then per layer
    `R <- R + mean_h((grad * A)^+) @ R`."""
    t = attention_lbnts.shape[-1]
    cam_lbts = jnp.maximum(gradient_lbnts * attention_lbnts, 0.0).mean(axis=2)
    eye = jnp.eye(t, dtype=jnp.float32)

    def layer(r_bts, a_bts):
        return r_bts + jnp.einsum("bts,bsu->btu", a_bts, r_bts), None

    out, _ = jax.lax.scan(layer, jnp.broadcast_to(eye, cam_lbts.shape[1:]), cam_lbts)
    return out


def _target(logits_bc: jax.Array, predicted_b: jax.Array) -> jax.Array:
    """log-odds of the predicted class: logit_c - logit_other (binary classifiers)."""
    diff_b = logits_bc[:, 1] - logits_bc[:, 0]
    return jnp.where(predicted_b == 1, diff_b, -diff_b)


class Attributor:
    """The six attributions of a `holo_jax.fairness.scoring.Classifier`, on `mesh` (default: one
    device). Rows of a batch are sharded over the mesh's data axes; parameters are replicated."""

    def __init__(self, classifier, *, mesh: Mesh | None = None, batch_size: int = 8,
                 ig_steps: int = DEFAULT_IG_STEPS, seed: int = 0):
        from holo_jax.model.heads import SequenceClassifier

        if ig_steps < 1:
            raise HoloError(f"the integrated-gradients step count must be at least 1, got {ig_steps}.")
        if batch_size < 1:
            raise HoloError(f"the explanation batch size must be at least 1, got {batch_size}.")
        self.classifier = classifier
        self.mesh = mesh or Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
        rows = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        # Each batch divides over the data-parallel devices (the last one is padded).
        self.batch_size = -(-batch_size // rows) * rows
        self.ig_steps, self.seed = int(ig_steps), int(seed)
        self.pooling = classifier.task_cfg.pooling
        self.model = SequenceClassifier(classifier.model_cfg, classifier.task_cfg.num_classes,
                                        capture_attention=True, pooling=self.pooling)
        replicated = NamedSharding(self.mesh, P())
        self.params = jax.device_put(classifier.params, replicated)
        self._rows = NamedSharding(self.mesh, P(_BATCH_AXES))
        self._compiled: dict[tuple[str, ...], Any] = {}

    # --- the jitted core -------------------------------------------------------------------

    def _perturbation_zeros(self, tokens_bt, lengths_b):
        shapes = jax.eval_shape(self.model.init, jax.random.key(0),
                                jax.ShapeDtypeStruct(tokens_bt.shape, tokens_bt.dtype),
                                jax.ShapeDtypeStruct(lengths_b.shape, lengths_b.dtype))["perturbations"]
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def _apply(self, params, perturbations, tokens_bt, lengths_b):
        return self.model.apply({"params": params, "perturbations": perturbations}, tokens_bt, lengths_b,
                                deterministic=True)

    def token_scores(self, params, tokens_bt, lengths_b, methods: tuple[str, ...]) -> dict[str, jax.Array]:
        """Traced: [b, t] token scores per method (zero past each row's length), plus `logits`,
        `predicted` and, with IG, `ig_error` and `ig_delta` [b]."""
        b, t = tokens_bt.shape
        zeros = self._perturbation_zeros(tokens_bt, lengths_b)

        def target(pert):
            logits_bc, out = self._apply(params, pert, tokens_bt, lengths_b)
            predicted_b = jnp.argmax(jax.lax.stop_gradient(logits_bc), -1)
            # Rows are independent, so the gradient of the sum is every row's own gradient.
            return _target(logits_bc, predicted_b).sum(), (logits_bc, out, predicted_b)

        grads, (logits_bc, out, predicted_b) = jax.grad(target, has_aux=True)(zeros)
        real_bt = (jnp.arange(t)[None, :] < lengths_b[:, None]).astype(jnp.float32)
        query_bt = _pooled_query(lengths_b, t, self.pooling)
        attention_lbnts = out["attention"].astype(jnp.float32)
        scores = {"logits": logits_bc, "predicted": predicted_b}
        if "raw_attention" in methods:
            scores["raw_attention"] = jnp.einsum("bt,bts->bs", query_bt, attention_lbnts[-1].mean(1))
        if "attention_rollout" in methods:
            scores["attention_rollout"] = jnp.einsum("bt,bts->bs", query_bt, rollout(attention_lbnts.mean(2)))
        if "grad_attention_rollout" in methods:
            grad_lbnts = grads["decoder"]["blocks"]["attn"]["attention"] if "blocks" in grads["decoder"] else \
                jnp.stack([grads["decoder"][f"block_{i}"]["attn"]["attention"]
                           for i in range(attention_lbnts.shape[0])])
            r_bts = gradient_weighted_rollout(attention_lbnts, grad_lbnts.astype(jnp.float32))
            scores["grad_attention_rollout"] = jnp.einsum("bt,bts->bs", query_bt, r_bts - jnp.eye(t))
        if "grad_cam" in methods:
            hidden_btd = out["hidden"].astype(jnp.float32)
            alpha_bd = jnp.einsum("bt,btd->bd", real_bt, grads["hidden"].astype(jnp.float32)) / lengths_b[:, None]
            scores["grad_cam"] = jax.nn.relu(jnp.einsum("bd,btd->bt", alpha_bd, hidden_btd))
        if "integrated_gradients" in methods:
            scores.update(self._integrated_gradients(params, tokens_bt, lengths_b, predicted_b, logits_bc))
        for m in methods:
            if m in scores:
                scores[m] = scores[m] * real_bt
        return scores

    def _integrated_gradients(self, params, tokens_bt, lengths_b, predicted_b, logits_bc):
        b, t = tokens_bt.shape
        m = self.ig_steps
        embed_btd = jnp.take(params["decoder"]["embedding"], tokens_bt, axis=0).astype(jnp.float32)
        # Gauss-Legendre nodes and weights on [0, 1] (as Captum's default `gausslegendre`: far fewer
        # steps than a Riemann sum for the same completeness error), then alpha = 0 (the baseline)
        # to measure completeness.
        nodes, weights = np.polynomial.legendre.leggauss(m)
        alphas = jnp.asarray(np.concatenate([(nodes + 1.0) / 2.0, [0.0]]), jnp.float32)
        quadrature_k = jnp.asarray(weights / 2.0, jnp.float32)
        k = m + 1
        tokens_kt = jnp.tile(tokens_bt, (k, 1))  # row s * b + i: step s of example i
        lengths_k = jnp.tile(lengths_b, k)
        predicted_k = jnp.tile(predicted_b, k)
        zeros = self._perturbation_zeros(tokens_kt, lengths_k)
        # perturb adds to the embedding: (alpha - 1) * e makes the input alpha * e.
        shift_ktd = ((alphas[:, None, None, None] - 1.0) * embed_btd[None]).reshape(k * b, t, -1)
        zeros["decoder"]["token_embedding_probe"]["value"] = shift_ktd.astype(
            zeros["decoder"]["token_embedding_probe"]["value"].dtype)

        def target(pert):
            logits_kc, _ = self._apply(params, pert, tokens_kt, lengths_k)
            f_k = _target(logits_kc, predicted_k)
            return f_k.sum(), f_k

        grads, f_k = jax.grad(target, has_aux=True)(zeros)
        g_kbtd = grads["decoder"]["token_embedding_probe"]["value"].astype(jnp.float32).reshape(k, b, t, -1)
        ig_btd = embed_btd * jnp.einsum("k,kbtd->btd", quadrature_k, g_kbtd[:m])
        real_bt = (jnp.arange(t)[None, :] < lengths_b[:, None]).astype(jnp.float32)
        ig_bt = ig_btd.sum(-1) * real_bt
        # Padding tokens past `lengths` cannot change the pooled output, so summing real tokens is complete.
        delta_b = _target(logits_bc, predicted_b) - f_k.reshape(k, b)[m]
        return {"integrated_gradients": ig_bt, "ig_error": jnp.abs(ig_bt.sum(-1) - delta_b), "ig_delta": delta_b}

    def _word_scores_fn(self, methods: tuple[str, ...]):
        if methods in self._compiled:
            return self._compiled[methods]
        n_words = self.classifier.max_len  # every word has at least one token, or none (cut off)

        def fn(params, tokens_bt, lengths_b, word_bt, example_b):
            scores = self.token_scores(params, tokens_bt, lengths_b, tuple(m for m in methods if m != "random"))
            onehot_btw = jax.nn.one_hot(word_bt, n_words, dtype=jnp.float32)  # NO_WORD (-1) -> all zeros
            out = {m: jnp.einsum("bt,btw->bw", scores[m], onehot_btw) for m in methods if m != "random"}
            if "random" in methods:
                keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(self.seed), i))(example_b)
                out["random"] = jax.vmap(lambda k: jax.random.uniform(k, (n_words,)))(keys)
            out["probability"] = jax.nn.softmax(scores["logits"], -1)[:, 1]
            out["predicted"] = scores["predicted"].astype(jnp.int32)
            for key in ("ig_error", "ig_delta"):
                if key in scores:
                    out[key] = scores[key]
            return out

        rows = self._rows
        jitted = jax.jit(fn, in_shardings=(NamedSharding(self.mesh, P()), rows, rows, rows, rows),
                         out_shardings=rows)
        self._compiled[methods] = jitted
        return jitted

    # --- the host side ---------------------------------------------------------------------

    def encode(self, texts: Sequence[str]):
        """Tokens [n, max_len], lengths [n], token -> word index [n, max_len], words per text."""
        clf = self.classifier
        n, t = len(texts), clf.max_len
        pad_id = int(getattr(clf.tokenizer, "pad_id", clf.tokenizer.eos_id))
        tokens = np.full((n, t), pad_id, np.int32)
        lengths = np.ones(n, np.int32)
        word_index = np.full((n, t), NO_WORD, np.int32)
        for i, text in enumerate(texts):
            ids = clf.encode(text)
            tokens[i, :len(ids)] = ids
            lengths[i] = len(ids)
            word_index[i, :len(ids)] = token_word_index(text, clf.tokenizer.encode, len(ids))
        return tokens, lengths, word_index, [split_words(x) for x in texts]

    def explain(self, texts: Sequence[str], methods: Sequence[str] = METHODS, *,
                first_index: int = 0) -> Attributions:
        """Word relevance of every method for each text, in order. `first_index` is the index of
        texts[0] in its dataset (it seeds `random`)."""
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise HoloError(f"unknown attribution method {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
        methods = tuple(m for m in METHODS if m in methods)
        fn = self._word_scores_fn(methods)
        tokens, lengths, word_index, words = self.encode(texts)
        n, b = len(texts), self.batch_size
        collected: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, b):
            stop = min(start + b, n)
            pad = b - (stop - start)
            take = lambda a: np.concatenate([a[start:stop], np.repeat(a[stop - 1:stop], pad, 0)])  # noqa: E731
            examples = np.arange(start, start + b, dtype=np.int32) + first_index
            out = jax.device_get(fn(self.params, take(tokens), take(lengths), take(word_index), examples))
            for key, value in out.items():
                collected.setdefault(key, []).append(np.asarray(value)[: stop - start])
        joined = {k: np.concatenate(v) for k, v in collected.items()}
        relevance = {m: [_fit(joined[m][i], len(words[i])) for i in range(n)] for m in methods}
        return Attributions(words=words, relevance=relevance, predicted=joined["predicted"],
                            probability=joined["probability"].astype(np.float32),
                            ig_completeness_error=joined.get("ig_error"), ig_target_delta=joined.get("ig_delta"))


def _fit(scores_w: np.ndarray, n_words: int) -> np.ndarray:
    """The first n_words scores; words past max_len tokens (never seen by the model) score 0."""
    out = np.zeros(n_words, np.float32)
    k = min(n_words, len(scores_w))
    out[:k] = scores_w[:k]
    return out


@functools.lru_cache(maxsize=None)
def data_mesh(devices: int) -> Mesh:
    """A mesh of the first `devices` devices, all on the `data` axis (attribution is data parallel)."""
    available = jax.devices()
    if not 1 <= devices <= len(available):
        raise HoloError(f"--devices {devices} is not between 1 and the {len(available)} devices this process "
                        "has; give a count in that range.")
    return Mesh(np.asarray(available[:devices]).reshape(devices, 1, 1), ("data", "fsdp", "tensor"))
