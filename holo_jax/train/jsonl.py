"""The one crash-safe JSON-lines writer and reader every log of a run uses.

  - A record is one line, written with a single `write` and flushed; `sync()` fsyncs (the loop
    calls it before every checkpoint, so whatever a checkpoint covers is on disk first).
  - Opening a file whose last line was torn by a crash mid-write cuts the torn bytes off (they
    can only be an incomplete record) and says how many, so the caller can record the repair;
    nothing is ever appended to a torn line.
  - Logs keyed by step (metrics, emitted windows) are idempotent: on a resume from step k,
    `truncate_after(k)` drops the rows of steps after k (logged before a crash, but whose state was
    never saved), atomically, so the resumed run's rows replace them and no step appears twice.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping


class JsonlFile:
    def __init__(self, path: str | Path, *, sync_each: bool = False):
        self.path = Path(path)
        self.sync_each = sync_each
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = _cut_torn_tail(self.path)
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, record: Mapping[str, Any]) -> None:
        self._f.write(json.dumps(jsonable(record), allow_nan=False) + "\n")
        self._f.flush()
        if self.sync_each:
            os.fsync(self._f.fileno())

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def truncate_after(self, step: int) -> int:
        """Drop rows whose `step` is after `step`; returns how many were dropped."""
        rows = read_jsonl(self.path)
        kept = [r for r in rows if r.get("step", 0) <= step]
        if len(kept) == len(rows):
            return 0
        self._f.close()
        _atomic_write(self.path, kept)
        self._f = open(self.path, "a", encoding="utf-8")
        return len(rows) - len(kept)

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """The complete records of a JSON-lines file ([] if it does not exist). A torn last line
    (a crash mid-write that no writer has repaired yet) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n") or not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # only a line torn in the middle of a multi-byte write can get here
    return rows


def read_metrics(path: str | Path) -> list[dict]:
    """metrics.jsonl as one record per step: an evaluation is logged after the checkpoint it
    follows, as a row of its own for the same step, and is merged here into that step's row."""
    by_step: dict[int, dict] = {}
    for row in read_jsonl(path):
        by_step.setdefault(row["step"], {}).update(row)
    return [by_step[s] for s in sorted(by_step)]


def jsonable(x: Any) -> Any:
    """`x` as plain JSON values: arrays and numpy/JAX scalars as lists and numbers, tuples as
    lists, non-finite floats as "nan"/"inf"/"-inf" (JSON has no NaN), anything else as its str."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "tolist"):  # numpy / JAX arrays and scalars
        return jsonable(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


def _cut_torn_tail(path: Path) -> int:
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as f:
        data_end = f.seek(0, os.SEEK_END)
        # Scan back for the last newline; a log's lines are short, so this reads little.
        pos, chunk = data_end, 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        else:
            keep = 0
        if keep < data_end:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return data_end - keep


def _atomic_write(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
