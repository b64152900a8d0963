"""Which identity words a classifier's rules lean on: the explanation section of the debias report.

Identity words are found from the data, not a fixed list, so this works for any evaluation file:
a normalised word is an identity word of identity g when it occurs in at least half of the texts
that mention g and in at most 5% of those that do not (e.g. "muslim" for `muslim`, "hispanic" for
`latino`). For each model, on the same examples: the local rules (construction only, no
perturbation checks: the question is which words the rule engine picks, not how precise each rule
is) of the texts it decides are toxic and that mention an identity, the share of those rules that
name an identity word, the identity words they name, and the global decision list's rules that
name one.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from holo_jax.explain.attribution import Attributor
from holo_jax.explain.engine import RULE_RELEVANCE, Explanations, global_rules
from holo_jax.explain.rules import construct_rules, decisions_of, normalised_words

MIN_SHARE_WITH, MAX_SHARE_WITHOUT = 0.5, 0.05


def identity_words(texts: Sequence[str], membership: np.ndarray, identities: Sequence[str]) -> dict[str, str]:
    """normalised word -> the identity it marks (see the module doc)."""
    norm = [set(normalised_words(t.split())) for t in texts]
    membership = np.asarray(membership, bool)
    out: dict[str, str] = {}
    for j, name in enumerate(identities):
        inside = [norm[i] for i in np.flatnonzero(membership[:, j])]
        outside = [norm[i] for i in np.flatnonzero(~membership[:, j])]
        if not inside:
            continue
        counts: dict[str, int] = {}
        for words in inside:
            for w in words:
                counts[w] = counts.get(w, 0) + 1
        for w, c in counts.items():
            elsewhere = sum(w in words for words in outside) / max(len(outside), 1)
            if c / len(inside) >= MIN_SHARE_WITH and elsewhere <= MAX_SHARE_WITHOUT:
                out[w] = name
    return out


def identity_reliance(classifier, texts: Sequence[str], membership: np.ndarray, identities: Sequence[str], *,
                      lexicon: dict[str, str] | None = None, batch_size: int = 16, seed: int = 0) -> dict:
    """The figures of the module doc for one classifier on `texts`."""
    lexicon = identity_words(texts, membership, identities) if lexicon is None else lexicon
    score = classifier.score  # its one fixed batch shape: usually compiled already by the caller's scoring
    probability = score(list(texts))
    decisions = decisions_of(probability)
    attributions = Attributor(classifier, batch_size=batch_size, seed=seed).explain(texts, (RULE_RELEVANCE,))
    rules, _ = construct_rules(attributions.words, attributions.relevance[RULE_RELEVANCE], decisions, score)
    mentions = np.asarray(membership, bool).any(1)
    toxic = [i for i in range(len(texts)) if decisions[i] == 1 and mentions[i]]
    named: dict[str, int] = {}
    leaning = 0
    for i in toxic:
        words = {w for phrase in rules[i].phrases for w in phrase.split(" ") if w in lexicon}
        leaning += bool(words)
        for w in words:
            named[w] = named.get(w, 0) + 1
    expl = Explanations(list(texts), attributions.words, probability, decisions,
                        {RULE_RELEVANCE: attributions.relevance[RULE_RELEVANCE]}, rules, None, None, {})
    report, dlist = global_rules(expl, seed=seed)
    global_identity = [r.text() for r in dlist.rules if any(w in lexicon for p in r.phrases for w in p.split(" "))]
    return {
        "examples": len(texts),
        "toxic_decisions_mentioning_identity": len(toxic),
        "share_of_their_rules_naming_identity_word": leaning / len(toxic) if toxic else None,
        "identity_words_in_rules": dict(sorted(named.items(), key=lambda kv: (-kv[1], kv[0]))),
        "global_rules_naming_identity_word": global_identity,
        "global_rules": len(dlist.rules),
        "global_fidelity": report["fidelity"],
    }
