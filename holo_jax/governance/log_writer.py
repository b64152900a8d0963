"""The append-only audit log writer (no JAX, no trainer: `verify`, `release` and tests use it bare).

Each `append` is one canonical-JSON line (see log_format.py), written with a single `write` on an
O_APPEND descriptor and fsynced, so a record is on disk whole or not at all and nothing written
before it can be damaged. The RFC 6962 tree over the records is kept as a compact range, and
`sign_head` appends a signed tree head (a DSSE envelope over size, root, time and the previous
head's hash) to heads.jsonl and republishes it as head.json.

Opening a log continues it: earlier records are re-read and their hashes checked (a damaged log is
refused, never appended to); an `audit_opened` record announces this session's public key; a torn
last line from a crash is cut off, kept in `torn/` and reported in an `audit_repaired` record.
An exclusive `flock` keeps two writers off one log.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping

from holo_jax.errors import HoloError
from holo_jax.governance import log_format as fmt
from holo_jax.governance.canonical import canonical_json
from holo_jax.governance.merkle import CompactTree, leaf_hash
from holo_jax.governance.signing import SigningKey, sign_envelope


class AuditLog:
    def __init__(self, directory: str | Path, key: SigningKey, *, process_index: int = 0,
                 log_name: str | None = None, opened: Mapping[str, Any] | None = None):
        self.directory = Path(directory)
        self.key = key
        self.process_index = process_index
        self.log_name = log_name or self.directory.name
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HoloError(f"cannot create the audit directory {self.directory} ({e.strerror}); "
                            f"give a --workdir you can write to.") from None
        self._lock = open(self.directory / ".lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise HoloError(f"another process is writing the audit log in {self.directory}; wait for it to "
                            f"finish (two writers would interleave records).") from None
        self.tree = CompactTree()
        self._prev = ""
        repaired = self._reopen_log()
        heads_repair, self._head_prev, self._head_size = self._reopen_heads()
        unsigned = max(0, self.tree.size - self._head_size)  # a crash between a record and its head
        self._fd = os.open(self.directory / fmt.LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._heads_fd = os.open(self.directory / fmt.HEADS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.repaired_bytes = repaired.get("torn_bytes", 0)
        self.append({"type": "audit_opened", "key": {"key_id": key.key_id, "public_pem": key.public_pem,
                                                    "source": key.source, "ephemeral": key.ephemeral},
                     "process_index": process_index, "host": socket.gethostname(), "pid": os.getpid(),
                     "unsigned_records_found": unsigned,
                     **dict(opened or {})})
        if repaired or heads_repair:  # what a crash cut off is on record, in the new session
            self.append({"type": "audit_repaired", **({"log": repaired} if repaired else {}),
                         **({"heads": heads_repair} if heads_repair else {})})
        self.sign_head()
        self.closed = False

    # ---- reading back what is there ----

    def _reopen_log(self) -> dict[str, Any]:
        path = self.directory / fmt.LOG
        if not path.exists():
            return {}
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        for i, line in enumerate(data[:end].split(b"\n")[:-1]):
            framed = fmt.split_line(line)
            if framed is None or leaf_hash(framed[1]).hex() != framed[0]:
                raise HoloError(f"the audit log {path} is damaged at record {i} (its hash does not match its "
                                f"bytes); run `python -m holo_jax.governance verify` on the run directory, and "
                                f"move {self.directory} aside to start a new log.")
            if json.loads(framed[1]).get("prev") != self._prev:
                raise HoloError(f"the audit log {path} is out of order at record {i}; run `python -m "
                                f"holo_jax.governance verify` and move {self.directory} aside to start a new log.")
            self.tree.append(bytes.fromhex(framed[0]))
            self._prev = framed[0]
        if end == len(data):
            return {}
        return {"torn_bytes": len(data) - end, **self._keep_torn(path, data, end)}

    def _keep_torn(self, path: Path, data: bytes, end: int) -> dict[str, Any]:
        """Cut a crash's incomplete last line off `path`, keeping its bytes in torn/ for the record."""
        torn = data[end:]
        keep = self.directory / "torn" / f"{path.name}.{end}.bin"
        keep.parent.mkdir(exist_ok=True)
        keep.write_bytes(torn)
        with open(path, "rb+") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
        return {"file": path.name, "offset": end, "sha256": hashlib.sha256(torn).hexdigest(),
                "kept_as": keep.relative_to(self.directory).as_posix()}

    def _reopen_heads(self) -> tuple[dict[str, Any], str, int]:
        path = self.directory / fmt.HEADS
        if not path.exists():
            return {}, "", 0
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        repair = {"torn_bytes": len(data) - end, **self._keep_torn(path, data, end)} if end < len(data) else {}
        lines = data[:end].split(b"\n")[:-1]
        if not lines:
            return repair, "", 0
        last = json.loads(lines[-1])
        return repair, hashlib.sha256(lines[-1]).hexdigest(), int(last["size"])

    # ---- writing ----

    def append(self, record: Mapping[str, Any]) -> int:
        """Append one record durably; returns its index."""
        seq = self.tree.size
        body = canonical_json({"prev": self._prev, "record": record, "seq": seq})
        leaf = leaf_hash(body)
        line = b'{"_sha256":"' + leaf.hex().encode() + b'",' + body[1:] + b"\n"
        os.write(self._fd, line)  # one write: on disk whole or (after a crash) as an incomplete last line
        os.fsync(self._fd)
        self.tree.append(leaf)
        self._prev = leaf.hex()
        return seq

    def sign_head(self) -> dict | None:
        """Sign and publish the current tree head (nothing if it has not grown since the last one)."""
        if self.tree.size == self._head_size and self._head_prev:
            return None
        payload = {"log": self.log_name, "process_index": self.process_index, "size": self.tree.size,
                   "root_sha256": self.tree.root().hex(), "timestamp": time.time(),
                   "prev_head_sha256": self._head_prev}
        envelope = sign_envelope(self.key, fmt.HEAD_PAYLOAD_TYPE, payload)
        head = {"envelope": envelope, "size": self.tree.size}
        line = canonical_json(head)
        os.write(self._heads_fd, line + b"\n")
        os.fsync(self._heads_fd)
        self._head_prev, self._head_size = hashlib.sha256(line).hexdigest(), self.tree.size
        tmp = self.directory / f".{fmt.HEAD}.tmp"
        with open(tmp, "wb") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / fmt.HEAD)
        return head

    def close(self, **fields: Any) -> None:
        if self.closed:
            return
        self.append({"type": "audit_closed", **fields})
        self.sign_head()
        os.close(self._fd)
        os.close(self._heads_fd)
        self._lock.close()  # releases the flock
        self.closed = True
