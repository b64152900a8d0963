"""Text domains for drift measurements, assembled from what every Python environment ships.

  embedded  the trainer's default corpus: CPython's help topics (`pydoc_data.topics`, English
            reference prose), both splits, in `EmbeddedSource` order
  code      CPython's standard library source: the top-level `*.py` modules of the running
            interpreter's stdlib directory (`sysconfig.get_paths()["stdlib"]`), sorted by name
  licenses  the license files (LICENSE*, LICENCE*, COPYING*, NOTICE*) of the installed
            distributions (`importlib.metadata`), sorted by distribution, duplicates dropped

Each is cut to at most `max_bytes` of UTF-8 text, taken from the start in that order, so the
domains are the same on any machine with the same Python and packages. They are used to measure
detection delays (`python -m experiments.drift --measure --json`) and in tests; they are not what
the detector was designed on: the measured targets are to be re-checked on other domains.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import sysconfig
from pathlib import Path
from typing import Callable

DOMAINS = ("embedded", "code", "licenses")


def _take(texts, max_bytes: int) -> list[str]:
    out, total = [], 0
    for text in texts:
        if not text.strip():
            continue
        out.append(text)
        total += len(text.encode("utf-8"))
        if total >= max_bytes:
            break
    return out


def embedded_documents() -> list[str]:
    from holo_jax.data.sources import EmbeddedSource

    docs = []
    for split in ("train", "validation"):
        source = EmbeddedSource(split)
        docs.extend(source.document(i) for i in range(source.num_documents()))
    return docs


def code_documents() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))]


def license_documents() -> list[str]:
    seen, docs = set(), []
    dists = sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower())
    for dist in dists:
        for f in sorted(dist.files or [], key=str):
            if not f.name.upper().startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE")):
                continue
            try:
                text = Path(dist.locate_file(f)).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            digest = hashlib.sha256(text.encode("utf-8")).digest()
            if digest not in seen:
                seen.add(digest)
                docs.append(text)
    return docs


_READERS: dict[str, Callable[[], list[str]]] = {
    "embedded": embedded_documents, "code": code_documents, "licenses": license_documents,
}


def domain_documents(name: str, max_bytes: int = 300_000) -> list[str]:
    """The documents of domain `name` (see the module docstring), at most ~`max_bytes` in all."""
    return _take(_READERS[name](), max_bytes)
