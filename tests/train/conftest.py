"""Shared fixtures of the train tests: a small labelled toxicity set with identity mentions."""
import json

import numpy as np
import pytest

IDENTITIES = ("female", "male", "muslim", "christian", "black", "white")
_SUBJECT = {"female": ["women", "my sister"], "male": ["men", "my brother"], "muslim": ["muslims"],
            "christian": ["christians"], "black": ["black people"], "white": ["white people"]}
_TOXIC = ["are stupid and worthless", "should shut up", "are disgusting idiots", "deserve nothing but contempt"]
_CIVIL = ["are my neighbours", "cooked a lovely dinner", "went to the library today", "have interesting ideas"]


def write_toxicity_jsonl(path, n: int = 480, seed: int = 0) -> None:
    """Templated comments in the manner of Dixon et al. 2018: identity terms in toxic and civil frames."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            identity = IDENTITIES[rng.integers(len(IDENTITIES))] if rng.random() < 0.8 else None
            subject = rng.choice(_SUBJECT[identity]) if identity else rng.choice(["people", "they", "the players"])
            toxic = int(rng.random() < 0.5)
            frame = rng.choice(_TOXIC if toxic else _CIVIL)
            record = {"text": f"{subject} {frame} #{i}", "label": toxic, "identities": [identity] if identity else []}
            f.write(json.dumps(record) + "\n")


@pytest.fixture(scope="session")
def toxicity_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("toxicity") / "comments.jsonl"
    write_toxicity_jsonl(path)
    return path
