"""What a checkpoint (or a report) is, byte for byte: per-file sha256 and one digest over them.

The digest of a directory is sha256 over the canonical JSON of its sorted file list
([{"path", "sha256", "size"}], paths relative and '/'-separated), so it does not depend on where
the run directory lives or on the order the filesystem lists files in, and a change to any byte,
a renamed, added or removed file changes it. The in-toto statement's subject is that digest; its
predicate carries the list, so `verify` can say which file changed.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from holo_jax.governance.canonical import canonical_json
from holo_jax.governance.signing import statement

CHECKPOINT_PREDICATE = "https://holo-jax.dev/provenance/checkpoint/v1"
REPORT_PREDICATE = "https://holo-jax.dev/provenance/report/v1"
_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def directory_files(directory: str | Path) -> list[dict]:
    """[{"path", "sha256", "size"}] of every regular file under `directory`, sorted by path."""
    root = Path(directory)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            digest, size = file_sha256(p)
            files.append({"path": p.relative_to(root).as_posix(), "sha256": digest, "size": size})
    return sorted(files, key=lambda f: f["path"])


def files_digest(files: list[dict]) -> str:
    return hashlib.sha256(canonical_json(files)).hexdigest()


def checkpoint_statement(name: str, step: int, files: list[dict], run: dict) -> dict:
    """in-toto statement: subject `name` (e.g. "checkpoints/100") with the digest of `files`."""
    return statement([{"name": name, "digest": {"sha256": files_digest(files)}}], CHECKPOINT_PREDICATE,
                     {"step": int(step), "files": files, "run": run})


def diff_files(logged: list[dict], now: list[dict]) -> str | None:
    """One phrase naming the first difference between two file lists; None if they are equal."""
    old = {f["path"]: f for f in logged}
    new = {f["path"]: f for f in now}
    for path in sorted(old.keys() | new.keys()):
        if path not in new:
            return f"{path} was removed"
        if path not in old:
            return f"{path} was added"
        if old[path]["sha256"] != new[path]["sha256"]:
            return f"{path} changed (sha256 {new[path]['sha256'][:12]}, logged {old[path]['sha256'][:12]})"
    return None
