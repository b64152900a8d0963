"""A mixture of two document sources that switches (or ramps) from one to the other.

`--set data.source=mixture --set data.mixture=embedded,domain.txt --set data.mixture_switch_document=4096`
streams the embedded corpus, then `domain.txt`: the packing pipeline reads the virtual document
sequence g = 0, 1, 2, ... (row r of a global batch of B reads g = r, r + B, ...; holo_jax.data.feeds),
and this source decides by g alone which component serves document g:

  switch  g < S: the first component, else the second. Each row stream therefore switches after
          ceil((S - r) / B) of its documents, i.e. at step ~ S / B x (tokens per document) / max_len.
  ramp    the second component's share rises linearly from 0 at g = S to 1 at g = S + R, drawn
          per document by a stable hash of (data.seed, g): the same on every process and resume.

Why documents, not steps: a source serves documents and knows neither the batch size nor the
sequence length (the task's batching does), and a position keyed by g keeps the pipeline's exact
resume (its per-row cursor) and its process independence unchanged. A component's document g is
its own document g mod N (a random-access component through its per-epoch shuffle, seeded by
data.seed, as `ShuffledFeed` does; a forward-only TFDS component in stored order), so both
components are read independently of the schedule.

The mixture is a forward-only source (`iterate`), so the pipeline reads g in order and never
shuffles across the switch (a shuffle would scatter the second component into the first).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Iterator

from holo_jax.data.documents import RandomAccessSource, Source
from holo_jax.data.feeds import ShuffledFeed
from holo_jax.errors import HoloError

# Virtual length of the mixture: large enough never to wrap in a real run, small enough that the
# pipeline's int32 document counters (g // B per row) cannot overflow.
VIRTUAL_DOCUMENTS = 2**30
_FILE_SUFFIXES = (".txt", ".jsonl")


def _is_files(spec: str) -> bool:
    return spec.endswith(_FILE_SUFFIXES) or any(c in spec for c in "*?[")


def check_mixture(cfg: Any, at: str) -> None:
    """Config check for source=mixture (called by DataConfig.check_relations)."""
    from holo_jax.data.sources import LM_SOURCE_NAMES

    if len(cfg.mixture) != 2:
        raise HoloError(f"{at}.source=mixture needs two components in {at}.mixture (an LM source name or a "
                        f".txt/.jsonl file or glob each), e.g. --set {at}.mixture=embedded,domain.txt; got "
                        f"{len(cfg.mixture)}.")
    for spec in cfg.mixture:
        if spec in ("mixture", "files") or (not _is_files(spec) and spec not in LM_SOURCE_NAMES):
            names = ", ".join(n for n in LM_SOURCE_NAMES if n not in ("files", "mixture"))
            raise HoloError(f"{at}.mixture component `{spec}` is neither an LM source ({names}) nor a .txt/.jsonl "
                            f"file or glob.")
        if _is_files(spec):
            from holo_jax.data.local_files import expand_paths

            expand_paths([spec])  # exists / matches, not a directory, .txt or .jsonl
    if cfg.mixture_schedule == "ramp" and cfg.mixture_ramp_documents < 1:
        raise HoloError(f"{at}.mixture_schedule=ramp needs {at}.mixture_ramp_documents >= 1 (documents over which the "
                        f"second component's share rises to 1).")


def component_source(spec: str, cfg: Any, split: str) -> Source:
    """The source one mixture component names (an LM source name, or files)."""
    from holo_jax.data.sources import make_source

    if _is_files(spec):
        return make_source(dataclasses.replace(cfg, source="files", paths=(spec,), mixture=()), split)
    return make_source(dataclasses.replace(cfg, source=spec, paths=(), mixture=()), split)


def second_share(g: int, schedule: str, switch: int, ramp: int) -> float:
    """The probability that virtual document g comes from the second component."""
    if schedule == "switch" or ramp == 0:
        return 0.0 if g < switch else 1.0
    return min(1.0, max(0.0, (g - switch) / ramp))


class MixtureSource:
    """Forward-only source over two components; see the module docstring."""

    def __init__(self, components: tuple[Source, Source], *, schedule: str = "switch", switch_document: int = 0,
                 ramp_documents: int = 0, seed: int = 0, names: tuple[str, str] = ("first", "second")):
        self.components = components
        self.schedule, self.switch, self.ramp, self.seed, self.names = (
            schedule, switch_document, ramp_documents, seed, names)
        for name, c in zip(names, components):
            if c.num_documents() == 0:
                raise HoloError(f"mixture component `{name}` has no documents; give it some text.")
        prints = [f"{n}={getattr(c, 'fingerprint', '') or repr(c)}" for n, c in zip(names, components)]
        self.fingerprint = hashlib.sha256(
            f"{schedule}:{switch_document}:{ramp_documents}:{seed}|{'|'.join(prints)}".encode()).hexdigest()

    def num_documents(self) -> int:
        return VIRTUAL_DOCUMENTS

    def component_of(self, g: int) -> int:
        """0 or 1: which component serves virtual document g (a pure function of g)."""
        p = second_share(g, self.schedule, self.switch, self.ramp)
        if p in (0.0, 1.0):
            return int(p)
        digest = hashlib.blake2b(f"{self.seed}:{g}".encode(), digest_size=8).digest()
        return int(int.from_bytes(digest, "little") / 2**64 < p)

    def iterate(self, start: int) -> Iterator[tuple[int, str]]:
        readers = [_ComponentReader(c, self.seed) for c in self.components]
        for g in range(start, VIRTUAL_DOCUMENTS):
            yield g, readers[self.component_of(g)].text(g)

    def __repr__(self) -> str:
        return f"MixtureSource({self.names[0]} -> {self.names[1]}, {self.schedule} at document {self.switch})"


class _ComponentReader:
    """Document g mod N of one component, fetched directly (random access, shuffled per epoch as
    the pipeline would) or by reading forwards (requests come with increasing g)."""

    def __init__(self, source: Source, seed: int):
        self._n = source.num_documents()
        self._random = isinstance(source, RandomAccessSource)
        self._feed = ShuffledFeed(source, seed) if self._random else None
        self._source = source
        self._iterator: Iterator[tuple[int, str]] | None = None
        self._position = -1  # virtual index (epoch * n + i) of the last document read forwards

    def text(self, g: int) -> str:
        if self._random:
            return self._feed.text(g)
        if self._iterator is None or g <= self._position:
            self._iterator = self._forward(g)
        while True:
            position, text = next(self._iterator)
            self._position = position
            if position == g:
                return text

    def _forward(self, g: int) -> Iterator[tuple[int, str]]:
        epoch, start = divmod(g, self._n)
        while True:
            for i, text in self._source.iterate(start):
                yield epoch * self._n + i, text
            epoch, start = epoch + 1, 0


def make_mixture(cfg: Any, split: str) -> MixtureSource:
    first, second = cfg.mixture
    return MixtureSource((component_source(first, cfg, split), component_source(second, cfg, split)),
                         schedule=cfg.mixture_schedule, switch_document=cfg.mixture_switch_document,
                         ramp_documents=cfg.mixture_ramp_documents, seed=cfg.seed, names=(first, second))
