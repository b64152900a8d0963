"""`verify`: is every audit log of a run intact, signed, and do the checkpoints still match it?

Per log (DIR/audit and DIR/audit/process-<k>), in order, stopping at the first error:
  1. every line is framed, its hash matches its bytes, its `seq` is its index and its `prev` the
     previous record's hash (an edit, deletion, insertion or move is pinned to a record here unless
     the forger rewrote the chain, which step 3 then catches);
  2. sessions: record 0 opens a session, each `audit_opened` announces a public key whose id is
     the hash of that key, and only an `audit_opened` may follow an `audit_closed`;
  3. signed heads: each is a DSSE envelope that verifies under the key of the session that wrote
     the head's last record (or one of `trusted_keys`, when given, and only those), each is chained
     to the previous head, sizes never shrink, and each root equals the RFC 6962 root of that many
     records; a head larger than the log means records were cut off (truncation);
  4. checkpoint provenance: each statement's signature, its subject digest against its own file
     list, and the files still on disk against that list (checkpoints rotated away by
     `checkpoint.keep` are counted, not an error);
  5. process 0's `peer_heads`: each recorded head verifies and matches that process's log.
What a crash can leave is a warning, not an error: an incomplete last line (never covered by a
signed head, so nothing signed is missing), or records after the last signed head of a session
that never closed. A log closed cleanly whose closing record no head covers lost its final head:
an error. `strict=True` turns the warnings into errors.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from holo_jax.governance import log_format as fmt
from holo_jax.governance.merkle import CompactTree
from holo_jax.governance.provenance import diff_files, directory_files, files_digest
from holo_jax.governance.signing import INTOTO_PAYLOAD_TYPE, key_id, load_public_pem, open_envelope


@dataclasses.dataclass
class LogCheck:
    process: int
    path: str
    records: int = 0
    heads: int = 0
    signed_size: int = 0
    sessions: int = 0
    keys: dict[str, str] = dataclasses.field(default_factory=dict)  # key id -> source
    checkpoints_verified: int = 0
    checkpoints_rotated: int = 0
    peer_heads_verified: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    bad_record: int | None = None
    root: str = ""
    leaves: list[bytes] = dataclasses.field(default_factory=list, repr=False)
    entries: list[dict] = dataclasses.field(default_factory=list, repr=False)
    head_list: list[dict] = dataclasses.field(default_factory=list, repr=False)


@dataclasses.dataclass
class RunCheck:
    workdir: str
    logs: list[LogCheck]

    @property
    def ok(self) -> bool:
        return bool(self.logs) and all(c.error is None for c in self.logs)

    @property
    def first_error(self) -> LogCheck | None:
        return next((c for c in self.logs if c.error is not None), None)

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "workdir": self.workdir, "logs": [
            {k: v for k, v in dataclasses.asdict(c).items() if k not in ("leaves", "entries", "head_list")}
            for c in self.logs]}


class _Bad(Exception):
    def __init__(self, message: str, record: int | None = None):
        super().__init__(message)
        self.record = record


def verify_run(workdir: str | Path, *, trusted_keys: Iterable[str] = (), check_checkpoints: bool = True,
               strict: bool = False) -> RunCheck:
    """Check every audit log under `workdir` (see the module docstring); never raises on bad logs."""
    workdir = Path(workdir)
    trusted = set(trusted_keys)
    dirs = fmt.process_dirs(workdir)
    checks = {k: _check_log(workdir, k, d, trusted, check_checkpoints) for k, d in dirs.items()}
    if 0 not in checks:
        missing = LogCheck(0, str(fmt.audit_dir(workdir) / fmt.LOG))
        missing.error = f"no audit log at {missing.path} (the run was made with --no-audit, or the log was deleted)"
        checks[0] = missing
    primary = checks[0]
    if primary.error is None:
        try:
            _check_peer_heads(primary, checks)
            _check_release(workdir, primary)
        except _Bad as e:
            primary.error, primary.bad_record = str(e), e.record
    for c in checks.values():
        if strict and c.error is None and c.warnings:
            c.error = f"strict: {c.warnings[0]}"
    return RunCheck(str(workdir), [checks[k] for k in sorted(checks)])


def _check_log(workdir: Path, process: int, directory: Path, trusted: set[str], check_checkpoints: bool) -> LogCheck:
    c = LogCheck(process, str(directory / fmt.LOG))
    try:
        _records(c, directory)
        session_of = _sessions(c)
        _heads(c, directory, session_of, trusted)
        _checkpoints(c, workdir, session_of, check_checkpoints)
    except _Bad as e:
        c.error, c.bad_record = str(e), e.record
    return c


def _records(c: LogCheck, directory: Path) -> None:
    data = (directory / fmt.LOG).read_bytes()
    end = data.rfind(b"\n") + 1
    prev = ""
    for i, line in enumerate(data[:end].split(b"\n")[:-1]):
        framed = fmt.split_line(line)
        if framed is None:
            raise _Bad(f"record {i} is not a framed audit record (it was edited or inserted by hand)", i)
        claimed, body = framed
        if hashlib.sha256(b"\x00" + body).hexdigest() != claimed:
            raise _Bad(f"record {i}: its hash does not match its bytes (the record was modified)", i)
        try:
            entry = json.loads(body)
        except ValueError:
            raise _Bad(f"record {i} is not valid JSON", i) from None
        if entry.get("seq") != i:
            raise _Bad(f"record {i} carries sequence number {entry.get('seq')} (records were deleted, inserted "
                       f"or reordered before or at this one)", i)
        if entry.get("prev") != prev:
            raise _Bad(f"record {i} does not follow record {i - 1} (its chain hash differs: a record was "
                       f"deleted, inserted, reordered or modified just before it)", i)
        if not isinstance(entry.get("record"), dict):
            raise _Bad(f"record {i} holds no record object (edited)", i)
        prev = claimed
        c.leaves.append(bytes.fromhex(claimed))
        c.entries.append(entry["record"])
    c.records = len(c.entries)
    if end < len(data):
        c.warnings.append(f"torn tail: {len(data) - end} bytes after record {c.records - 1} are an incomplete "
                          f"record (a crash mid-append); they are cut and reported when the log is next opened")


def _sessions(c: LogCheck) -> list[int]:
    """The index of the `audit_opened` record of each record's session."""
    session_of, current, closed = [], -1, False
    for i, r in enumerate(c.entries):
        kind = r.get("type") if isinstance(r, dict) else None
        if kind == "audit_opened":
            key = r.get("key") or {}
            try:
                pub = load_public_pem(key["public_pem"])
            except (KeyError, TypeError, ValueError):
                raise _Bad(f"record {i}: the session's public key is missing or unreadable (changed)", i) from None
            if key_id(pub) != key.get("key_id"):
                raise _Bad(f"record {i}: the session's public key does not match its key id {str(key.get('key_id'))[:16]} "
                           f"(the public key was changed)", i)
            c.keys[key["key_id"]] = key.get("source", "?")
            current, closed = i, False
            c.sessions += 1
        elif current < 0:
            raise _Bad(f"record {i} comes before any session was opened (the log must start with audit_opened)", i)
        elif closed:
            raise _Bad(f"record {i} follows the closed session {current} without a new session being opened "
                       f"(inserted)", i)
        elif kind == "audit_closed":
            closed = True
        session_of.append(current)
    return session_of


def _public_keys(c: LogCheck, upto: int) -> dict[str, Any]:
    return {r["key"]["key_id"]: load_public_pem(r["key"]["public_pem"])
            for r in c.entries[:upto] if r.get("type") == "audit_opened"}


def _heads(c: LogCheck, directory: Path, session_of: list[int], trusted: set[str]) -> None:
    path = directory / fmt.HEADS
    data = path.read_bytes() if path.exists() else b""
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")[:-1]
    if end < len(data):
        c.warnings.append(f"torn tail in {fmt.HEADS}: {len(data) - end} bytes of an incomplete head (a crash "
                          f"while signing)")
    if not lines:
        raise _Bad(f"no signed tree head in {path} (deleted): nothing in the log is signed", 0 if c.records else None)
    tree = CompactTree()
    keys = _public_keys(c, c.records)
    prev_hash, prev_size = "", 0
    for h, line in enumerate(lines):
        where = f"signed head {h} ({fmt.HEADS} line {h + 1})"
        try:
            head = json.loads(line)
            envelope, claimed_size = head["envelope"], int(head["size"])
        except (ValueError, KeyError, TypeError):
            raise _Bad(f"{where} is not a signed head (edited)") from None
        size_record = min(claimed_size, c.records) - 1
        if claimed_size > c.records:
            raise _Bad(f"{where} covers {claimed_size} records but the log has {c.records}: records "
                       f"{c.records}..{claimed_size - 1} were cut off (truncated)", c.records)
        if claimed_size < 1:
            raise _Bad(f"{where} covers no record (edited)")
        owner = c.entries[session_of[size_record]]["key"]["key_id"]
        # Only the key of the session that wrote the head's last record may sign it, and with
        # --trusted-key only if that key is one of them.
        allowed = {owner: keys[owner]} if owner in keys and (not trusted or owner in trusted) else {}
        try:
            payload, _ = open_envelope(envelope, allowed)
        except ValueError as e:
            reason = str(e)
            if trusted and owner not in trusted:
                reason = f"the session's key {owner[:16]} is not one of the --trusted-key keys ({e})"
            raise _Bad(f"{where}: {reason}", size_record) from None
        if envelope.get("payloadType") != fmt.HEAD_PAYLOAD_TYPE or payload.get("size") != claimed_size:
            raise _Bad(f"{where}: its signed size or type differs from the unsigned one (edited)", size_record)
        if payload.get("prev_head_sha256") != prev_hash:
            raise _Bad(f"{where} is not chained to the head before it (a signed head was deleted, inserted or "
                       f"reordered)", size_record)
        if claimed_size < prev_size:
            raise _Bad(f"{where} covers {claimed_size} records, fewer than the head before it ({prev_size})", size_record)
        while tree.size < claimed_size:
            tree.append(c.leaves[tree.size])
        if tree.root().hex() != payload.get("root_sha256"):
            raise _Bad(f"{where}: the records it signed (up to {claimed_size - 1}, after record {prev_size - 1} "
                       f"that the previous head covers) are not the records in the log (modified, inserted, "
                       f"deleted or reordered, with the hash chain rewritten)", max(prev_size, 0))
        prev_hash, prev_size = hashlib.sha256(line).hexdigest(), claimed_size
        c.head_list.append(payload)
    c.heads, c.signed_size = len(lines), prev_size
    while tree.size < c.records:
        tree.append(c.leaves[tree.size])
    c.root = tree.root().hex()
    if prev_size < c.records:
        if any(r.get("type") == "audit_closed" for r in c.entries[prev_size:]):
            raise _Bad(f"the log was closed at a record no signed head covers (records {prev_size}.."
                       f"{c.records - 1}): its final signed head was removed", prev_size)
        c.warnings.append(f"records {prev_size}..{c.records - 1} come after the last signed head of a session that "
                          f"never closed (a crash before its next sync); they are not signed")


def _checkpoints(c: LogCheck, workdir: Path, session_of: list[int], check_files: bool) -> None:
    for i, r in enumerate(c.entries):
        if r.get("type") != "checkpoint_provenance":
            continue
        keys = _public_keys(c, session_of[i] + 1)
        owner = c.entries[session_of[i]]["key"]["key_id"]
        try:
            stmt, _ = open_envelope(r["envelope"], {owner: keys[owner]})
        except (ValueError, KeyError, TypeError) as e:
            raise _Bad(f"record {i}: the checkpoint statement for step {r.get('step')} does not verify ({e})", i) from None
        subject = stmt["subject"][0]
        files = stmt["predicate"]["files"]
        if r["envelope"].get("payloadType") != INTOTO_PAYLOAD_TYPE or subject["digest"]["sha256"] != files_digest(files) \
                or subject["digest"] != r.get("digest"):
            raise _Bad(f"record {i}: the checkpoint statement for step {r.get('step')} disagrees with its own file "
                       f"list or with the logged digest", i)
        directory = workdir / subject["name"]
        if not check_files:
            continue
        if not directory.is_dir():
            c.checkpoints_rotated += 1
            continue
        now = directory_files(directory)
        if files_digest(now) != subject["digest"]["sha256"]:
            raise _Bad(f"record {i}: checkpoint {subject['name']} no longer matches its logged digest: "
                       f"{diff_files(files, now)}", i)
        c.checkpoints_verified += 1


def _check_peer_heads(primary: LogCheck, checks: dict[int, LogCheck]) -> None:
    for i, r in enumerate(primary.entries):
        if r.get("type") != "peer_heads":
            continue
        for k, head in sorted(r.get("heads", {}).items()):
            peer = checks.get(int(k))
            if head is None:
                raise _Bad(f"record {i}: process {k} had no signed head at step {r.get('step')}", i)
            if peer is None or peer.error is not None:
                why = "missing" if peer is None else f"bad: {peer.error}"
                raise _Bad(f"record {i} holds process {k}'s signed head, but that process's log is {why}", i)
            size = int(head["size"])
            try:
                payload, _ = open_envelope(head["envelope"], _public_keys(peer, min(size, peer.records)))
            except (ValueError, KeyError, TypeError) as e:
                raise _Bad(f"record {i}: process {k}'s recorded head does not verify ({e})", i) from None
            if payload.get("size") != size or size > peer.records:
                raise _Bad(f"record {i}: process {k}'s recorded head covers {size} records, its log has "
                           f"{peer.records} (truncated)", i)
            tree = CompactTree()
            for leaf in peer.leaves[:size]:
                tree.append(leaf)
            if tree.root().hex() != payload.get("root_sha256"):
                raise _Bad(f"record {i}: process {k}'s log differs from the head process 0 recorded at step "
                           f"{r.get('step')}", i)
            primary.peer_heads_verified += 1


def _check_release(workdir: Path, primary: LogCheck) -> None:
    """DIR/release.json, if present: signed by a key of this log, for a logged checkpoint digest, and
    byte for byte the file the log's `released` event names."""
    path = workdir / "release.json"
    if not path.exists():
        return
    data = path.read_bytes()
    try:
        stmt, _ = open_envelope(json.loads(data), _public_keys(primary, primary.records))
        digest = stmt["subject"][0]["digest"]["sha256"]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise _Bad(f"release.json does not verify ({e})") from None
    logged = {r["digest"]["sha256"] for r in primary.entries if r.get("type") == "checkpoint_provenance"}
    if digest not in logged:
        raise _Bad("release.json releases a checkpoint digest that no checkpoint_provenance record holds")
    released = [r["event"].get("release_sha256") for r in primary.entries
                if r.get("type") == "event" and r["event"].get("kind") == "released"]
    if hashlib.sha256(data).hexdigest() not in released:
        raise _Bad("release.json is not the release record the log's `released` event names (replaced)")


def describe_record(c: LogCheck, index: int | None) -> str:
    if index is None or not 0 <= index < len(c.entries):
        return ""
    return json.dumps(c.entries[index])[:400]
