"""Audit logs built straight through the API (no training), and the mutations the tamper test applies."""
from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path

from holo_jax.governance.audit import AuditSink
from holo_jax.governance.canonical import canonical_json
from holo_jax.governance.merkle import leaf_hash
from holo_jax.governance.signing import load_signing_key

KINDS = ("run_start", "data_lineage", "remat_plan", "nonfinite_step_skipped", "checkpoint_started", "policy_warning",
         "resume", "preempted", "report", "run_end")


def fake_checkpoint(workdir: Path, step: int, rng: random.Random) -> None:
    d = workdir / "checkpoints" / str(step)
    (d / "state" / "d").mkdir(parents=True, exist_ok=True)
    for name in ("_CHECKPOINT_METADATA", "state/manifest.ocdbt", f"state/d/{rng.getrandbits(64):016x}"):
        (d / name).write_bytes(rng.randbytes(rng.randint(1, 3000)))


def build_run(workdir: Path, rng: random.Random, *, sessions: int | None = None, crash_last: bool = False) -> Path:
    """A run directory whose audit log has 1-3 sessions of random events, checkpoints with files on
    disk (some rotated away afterwards), heads at sync points; every session closes cleanly unless
    `crash_last`."""
    workdir.mkdir(parents=True, exist_ok=True)
    step = 0
    n_sessions = sessions or rng.randint(1, 3)
    key = load_signing_key() if rng.random() < 0.5 else None  # one key across sessions, or one per session
    for s in range(n_sessions):
        sink = AuditSink(workdir, signing_key=key or load_signing_key(), process_index=0, process_count=1)
        sink.rewind(step)
        sink.event({"time": 1.0 + s, "kind": "run_start" if s == 0 else "resume", "host": "h", "step": step,
                    "config": {"steps": 100, "lr": 0.003, "name": f"run{s}"}})
        for _ in range(rng.randint(3, 12)):
            step += rng.randint(1, 5)
            kind = rng.choice(KINDS)
            sink.event({"time": 2.0 + step, "kind": kind, "host": "h", "step": step, "value": rng.random(),
                        "note": "é" * rng.randint(0, 3)})
            if rng.random() < 0.35:
                sink.sync()
                fake_checkpoint(workdir, step, rng)
                sink.event({"time": 3.0 + step, "kind": "checkpoint_saved", "host": "h", "step": step,
                            "directory": str(workdir / "checkpoints")})
        if s == n_sessions - 1 and not (workdir / "checkpoints").exists():  # at least one checkpoint per run
            sink.sync()
            fake_checkpoint(workdir, step, rng)
            sink.event({"time": 8.0, "kind": "checkpoint_saved", "host": "h", "step": step,
                        "directory": str(workdir / "checkpoints")})
        if crash_last and s == n_sessions - 1:
            sink.event({"time": 9.0, "kind": "after_last_sync", "host": "h"})
            sink.log._lock.close()  # what a kill leaves: no audit_closed, no final head
            return workdir
        sink.event({"time": 9.0 + s, "kind": "run_end", "host": "h", "step": step})
        sink.close()
    ckpts = sorted((workdir / "checkpoints").glob("*")) if (workdir / "checkpoints").exists() else []
    if len(ckpts) > 2 and rng.random() < 0.5:  # checkpoint.keep rotation removed the oldest
        import shutil

        shutil.rmtree(ckpts[0])
    return workdir


# ---- reading and rewriting the log as an attacker would ----

def lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def write_lines(path: Path, rows: list[bytes]) -> None:
    path.write_bytes(b"".join(r + b"\n" for r in rows))


def entry(line: bytes) -> dict:
    e = json.loads(line)
    e.pop("_sha256")
    return e


def frame(e: dict) -> bytes:
    body = canonical_json(e)
    return b'{"_sha256":"' + leaf_hash(body).hex().encode() + b'",' + body[1:]


def rechain(entries: list[dict]) -> list[bytes]:
    """Renumber and re-link every record, so each line is self-consistent (a careful forger)."""
    out, prev = [], ""
    for i, e in enumerate(entries):
        e = {**e, "seq": i, "prev": prev}
        line = frame(e)
        prev = json.loads(line)["_sha256"]
        out.append(line)
    return out


def _edit_record(rec: dict, rng: random.Random) -> dict:
    rec = json.loads(json.dumps(rec))
    if rec.get("type") == "event":
        rec["event"]["time"] = rec["event"].get("time", 0) + rng.randint(1, 1000)
    else:
        rec["edited"] = rng.randint(0, 10**6)
    return rec


def mutate(workdir: Path, cls: str, rng: random.Random) -> str:
    """Apply one mutation of class `cls`; returns a description. Every mutation changes the files."""
    log = workdir / "audit" / "log.jsonl"
    heads = workdir / "audit" / "heads.jsonl"
    rows = lines(log)
    n = len(rows)
    if cls == "flip_byte":
        i = rng.randrange(n)
        row = bytearray(rows[i])
        j = rng.randrange(len(row))
        row[j] = (row[j] + rng.randint(1, 94)) % 95 + 32 if row[j] != 10 else 65
        if bytes(row) == rows[i]:
            row[j] ^= 1
        rows[i] = bytes(row)
        write_lines(log, rows)
        return f"flipped byte {j} of record {i}"
    if cls == "modify_rehash":
        i = rng.randrange(n)
        e = entry(rows[i])
        e["record"] = _edit_record(e["record"], rng)
        rows[i] = frame(e)
        write_lines(log, rows)
        return f"modified record {i} and fixed its own hash"
    if cls == "modify_rechain":
        i = rng.randrange(n)
        es = [entry(r) for r in rows]
        es[i]["record"] = _edit_record(es[i]["record"], rng)
        write_lines(log, rechain(es))
        return f"modified record {i} and rewrote the hash chain"
    if cls == "delete":
        i = rng.randrange(n)
        del rows[i]
        write_lines(log, rows)
        return f"deleted record {i}"
    if cls == "delete_rechain":
        i = rng.randrange(n)
        es = [entry(r) for r in rows]
        del es[i]
        write_lines(log, rechain(es))
        return f"deleted record {i} and renumbered/rechained"
    if cls == "insert":
        i, j = rng.randrange(n + 1), rng.randrange(n)
        rows.insert(i, rows[j])
        write_lines(log, rows)
        return f"inserted a copy of record {j} at {i}"
    if cls == "insert_rechain":
        i = rng.randrange(n + 1)
        es = [entry(r) for r in rows]
        es.insert(i, {"record": {"type": "event", "event": {"kind": "checkpoint_saved", "step": 1}}})
        write_lines(log, rechain(es))
        return f"inserted a forged record at {i} and rechained"
    if cls == "reorder":
        i = rng.randrange(n - 1)
        j = rng.randrange(i + 1, n)
        rows[i], rows[j] = rows[j], rows[i]
        write_lines(log, rows)
        return f"swapped records {i} and {j}"
    if cls == "reorder_rechain":
        i = rng.randrange(n - 1)
        j = rng.randrange(i + 1, n)
        es = [entry(r) for r in rows]
        es[i], es[j] = es[j], es[i]
        if es[i] == es[j]:
            raise AssertionError("identical records")
        write_lines(log, rechain(es))
        return f"swapped records {i} and {j} and rechained"
    if cls == "truncate_records":
        k = rng.randint(1, min(5, n - 1))
        write_lines(log, rows[:-k])
        return f"cut the last {k} records"
    if cls == "truncate_bytes":
        data = log.read_bytes()
        cut = rng.randrange(1, len(data) - 1)
        log.write_bytes(data[:cut])
        return f"cut the log at byte {cut} of {len(data)}"
    hrows = lines(heads)
    if cls == "bad_signature":
        h = rng.randrange(len(hrows))
        head = json.loads(hrows[h])
        sig = bytearray(base64.b64decode(head["envelope"]["signatures"][0]["sig"]))
        sig[rng.randrange(len(sig))] ^= 1 << rng.randrange(8)
        head["envelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
        hrows[h] = canonical_json(head)
        write_lines(heads, hrows)
        return f"flipped a bit of head {h}'s signature"
    if cls == "edit_head":
        h = rng.randrange(len(hrows))
        head = json.loads(hrows[h])
        payload = json.loads(base64.b64decode(head["envelope"]["payload"]))
        payload["root_sha256"] = leaf_hash(os.urandom(8)).hex()
        head["envelope"]["payload"] = base64.b64encode(canonical_json(payload)).decode()
        hrows[h] = canonical_json(head)
        write_lines(heads, hrows)
        return f"changed head {h}'s root without re-signing"
    if cls == "missing_signature":
        choice = rng.choice(["delete_head", "delete_last_head", "empty_signatures", "delete_file"])
        if choice == "delete_file" or len(hrows) == 1:
            heads.unlink()
            return "deleted heads.jsonl"
        if choice == "empty_signatures":
            h = rng.randrange(len(hrows))
            head = json.loads(hrows[h])
            head["envelope"]["signatures"] = []
            hrows[h] = canonical_json(head)
            write_lines(heads, hrows)
            return f"removed head {h}'s signature"
        h = len(hrows) - 1 if choice == "delete_last_head" else rng.randrange(len(hrows))
        del hrows[h]
        write_lines(heads, hrows)
        return f"deleted signed head {h}"
    if cls == "changed_key":
        es = [entry(r) for r in rows]
        opened = [i for i, e in enumerate(es) if e["record"].get("type") == "audit_opened"]
        i = rng.choice(opened)
        other = load_signing_key()
        es[i]["record"]["key"].update(public_pem=other.public_pem,
                                      key_id=other.key_id if rng.random() < 0.7 else es[i]["record"]["key"]["key_id"])
        write_lines(log, rechain(es))
        return f"replaced the public key announced at record {i}"
    if cls == "checkpoint_bytes":
        files = sorted(p for p in (workdir / "checkpoints").rglob("*") if p.is_file())
        p = rng.choice(files)
        how = rng.choice(["flip", "append", "delete", "add"])
        if how == "flip":
            data = bytearray(p.read_bytes())
            data[rng.randrange(len(data))] ^= 0xFF
            p.write_bytes(bytes(data))
        elif how == "append":
            with open(p, "ab") as f:
                f.write(b"\x00")
        elif how == "delete":
            p.unlink()
        else:
            (p.parent / "extra.bin").write_bytes(b"x")
        return f"checkpoint file {p.relative_to(workdir)}: {how}"
    raise ValueError(cls)


CLASSES = ("flip_byte", "modify_rehash", "modify_rechain", "delete", "delete_rechain", "insert", "insert_rechain",
           "reorder", "reorder_rechain", "truncate_records", "truncate_bytes", "bad_signature", "edit_head",
           "missing_signature", "changed_key", "checkpoint_bytes")
