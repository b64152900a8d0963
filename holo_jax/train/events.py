"""The host-side lifecycle event sink: `WORKDIR/events.jsonl`.

One JSON object per event (run start with the resolved config, resume, checkpoint saved, NaN
step skipped, preemption, run end). Each line is flushed and fsynced before `emit` returns, so
the record survives a crash right after it. Only the primary process writes; the governance
layer will later replace this with a signed, hash-chained audit log behind the same `emit`.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any


class EventLog:
    def __init__(self, path: str | Path, *, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _end_torn_line(self.path)

    def emit(self, kind: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"time": time.time(), "kind": kind, "host": socket.gethostname(), **fields}
        line = json.dumps(record, default=_jsonable, sort_keys=False)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict]:
        """All complete records (a line torn by a crash mid-write is skipped)."""
        if not self.path.exists():
            return []
        records = []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return records


def _end_torn_line(path: Path) -> None:
    """If a crash left a partial last line, end it so the next record starts on its own line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item") and getattr(x, "size", 2) == 1:
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)
