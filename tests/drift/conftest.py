"""Shared fixtures of the drift tests: short-document domain files and a tiny trained LM."""
from __future__ import annotations

import json

import pytest

from holo_jax.drift.domains import domain_documents


def fixed_length_lines(domain: str, n: int, length: int = 64) -> list[str]:
    """`n` ASCII pieces of exactly `length` bytes of a domain's text: with max_len = length, each
    is one packed row (its bytes + the end-of-document token), so document k of a row stream is
    read at step k + 1 exactly."""
    text = " ".join(" ".join(domain_documents(domain, 400_000)).split())  # one line, single spaces
    text = text.encode("ascii", "ignore").decode()
    return [text[i * length:(i + 1) * length] for i in range(min(n, len(text) // length))]


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def domain_files(tmp_path_factory):
    """{domain: .jsonl of 64-byte documents}, and .txt reference/stream files for the CLI."""
    d = tmp_path_factory.mktemp("domains")
    files = {}
    for name in ("embedded", "code", "licenses"):
        lines = fixed_length_lines(name, 3000)
        files[name] = write_jsonl(d / f"{name}.jsonl", lines)
        # Reference and stream: alternate runs of 64 lines (~4 KB), so both sample the whole domain
        # (its first and second halves are different topics: that would be drift, not a held-out set).
        runs = [lines[i:i + 64] for i in range(0, len(lines), 64)]
        (d / f"{name}_reference.txt").write_text("\n".join(x for r in runs[0::2] for x in r))
        (d / f"{name}_stream.txt").write_text("\n".join(x for r in runs[1::2] for x in r))
        files[f"{name}_reference"] = str(d / f"{name}_reference.txt")
        files[f"{name}_stream"] = str(d / f"{name}_stream.txt")
    return files


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """A tiny pretrained workdir (2 layers x 64, sequence 64, 40 steps on the embedded corpus)."""
    import dataclasses

    from experiments.configs import pretrain as configs
    from holo_jax.config import LogConfig
    from holo_jax.train.loop import train

    workdir = tmp_path_factory.mktemp("tiny_lm")
    cfg = configs.tiny()
    cfg = dataclasses.replace(cfg, log=LogConfig(eval_every_steps=0, tensorboard=False, progress_bar=False, plot=False))
    train(cfg, workdir)
    return workdir
