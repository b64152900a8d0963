"""Where a run's audit logs live and how one record is framed, shared by the writer and `verify`.

  DIR/audit/                    process 0's log (a one-process run has only this one)
  DIR/audit/process-<k>/        process k's log in a multi-process run
     log.jsonl    one record per line, append-only, fsynced
     heads.jsonl  signed tree heads (DSSE envelopes), append-only, fsynced, each chained to the last
     head.json    the latest signed head (written aside and renamed), read by process 0 at checkpoints

A line is the canonical JSON (RFC 8785) of {"_sha256": H, "prev": P, "record": R, "seq": i}.
H is the RFC 6962 leaf hash of the same object without "_sha256"; since "_sha256" sorts first, that
object's bytes are "{" + the line after the `"_sha256":"<64 hex>",` prefix, so a reader checks a
record's hash without re-serialising it (this is what makes `verify` of 100k records fast). P is
the previous record's H (pins an edited record to its index), i its index. A crash can leave only
an incomplete last line (one `write` per record on an O_APPEND file); it is never mistaken for a
record.
"""
from __future__ import annotations

import re
from pathlib import Path

LOG, HEADS, HEAD = "log.jsonl", "heads.jsonl", "head.json"
HEAD_PAYLOAD_TYPE = "application/vnd.holo-jax.tree-head+json"
_PREFIX = re.compile(rb'\{"_sha256":"([0-9a-f]{64})",')
PREFIX_LEN = len('{"_sha256":"",') + 64


def audit_dir(workdir: str | Path, process_index: int = 0) -> Path:
    base = Path(workdir) / "audit"
    return base if process_index == 0 else base / f"process-{process_index}"


def process_dirs(workdir: str | Path) -> dict[int, Path]:
    """{process index: its audit directory} for every log present under DIR/audit."""
    base = Path(workdir) / "audit"
    found = {0: base} if (base / LOG).exists() else {}
    if base.is_dir():
        for d in base.glob("process-*"):
            suffix = d.name.removeprefix("process-")
            if suffix.isdigit() and (d / LOG).exists():
                found[int(suffix)] = d
    return dict(sorted(found.items()))


def split_line(line: bytes) -> tuple[str, bytes] | None:
    """(the hex hash a line claims, the bytes that hash is over); None if the line is not framed."""
    m = _PREFIX.match(line)
    if m is None:
        return None
    return m.group(1).decode(), b"{" + line[m.end():]
