"""A process killed (SIGKILL) mid-append leaves a log that verifies; the torn tail is reported, then
cut and put on record by the next writer, never silently dropped."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from holo_jax.governance.log_writer import AuditLog
from holo_jax.governance.signing import load_signing_key
from holo_jax.governance.verify import verify_run

ROOT = Path(__file__).resolve().parents[2]
KILLS = 6


def records(directory: Path) -> list[dict]:
    return [json.loads(line)["record"] for line in (directory / "log.jsonl").read_bytes().split(b"\n")[:-1]]


def test_killed_writer_leaves_a_valid_log(tmp_path):
    run = tmp_path / "run"
    audit = run / "audit"
    rng = random.Random(0)
    torn_seen = 0
    for k in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-m", "tests.governance._append_forever", str(audit)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            size_before = (audit / "log.jsonl").stat().st_size
            time.sleep(rng.uniform(0.05, 0.4))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert (audit / "log.jsonl").stat().st_size > size_before  # it was writing when killed
        result = verify_run(run)
        log = result.logs[0]
        assert result.ok, log.error  # earlier records intact, everything signed still verifies
        torn_seen += any(w.startswith("torn tail") for w in log.warnings)
        # What the crash left unsigned is reported, not hidden.
        if log.signed_size < log.records:
            assert any("never closed" in w for w in log.warnings), log.warnings
        assert verify_run(run, strict=True).ok == (not log.warnings)
    # The next writer cuts each torn tail, keeps its bytes and records it: nothing vanishes silently.
    final = AuditLog(audit, load_signing_key(), log_name="audit")
    final.close()
    result = verify_run(run, strict=True)
    assert result.ok, result.first_error.error
    recs = records(audit)
    repaired = [r for r in recs if r["type"] == "audit_repaired"]
    cut = sum(r.get("log", {}).get("torn_bytes", 0) for r in repaired)
    kept = sum(p.stat().st_size for p in (audit / "torn").glob("log.jsonl.*")) if (audit / "torn").exists() else 0
    assert cut == kept
    assert len(repaired) >= torn_seen
    print(f"{torn_seen} of {KILLS} kills tore a record mid-write")
    opened = [r for r in recs if r["type"] == "audit_opened"]
    assert len(opened) == KILLS + 1 and sum(r["unsigned_records_found"] for r in opened) >= 0


def test_torn_tail_is_reported_then_repaired_on_record(tmp_path):
    run = tmp_path / "run"
    log = AuditLog(run / "audit", load_signing_key(), log_name="audit")
    for i in range(5):
        log.append({"type": "event", "event": {"kind": "x", "i": i}})
    log.sign_head()
    log.append({"type": "event", "event": {"kind": "after_head"}})
    log._lock.close()  # the process "dies" here, then half a record reaches the disk
    torn = b'{"_sha256":"' + b"ab" * 20
    with open(run / "audit" / "log.jsonl", "ab") as f:
        f.write(torn)
    result = verify_run(run)
    assert result.ok, result.first_error.error
    warnings = result.logs[0].warnings
    assert any(w.startswith(f"torn tail: {len(torn)} bytes after record 6") for w in warnings), warnings
    assert any("never closed" in w for w in warnings)  # the record after the last head is unsigned
    assert not verify_run(run, strict=True).ok
    again = AuditLog(run / "audit", load_signing_key(), log_name="audit")
    again.close()
    recs = records(run / "audit")
    rep = next(r for r in recs if r["type"] == "audit_repaired")
    assert rep["log"]["torn_bytes"] == len(torn) and (run / "audit" / rep["log"]["kept_as"]).read_bytes() == torn
    opened = [r for r in recs if r["type"] == "audit_opened"]
    assert opened[-1]["unsigned_records_found"] == 1
    assert verify_run(run, strict=True).ok


def test_a_damaged_log_is_refused_not_appended_to(tmp_path):
    from holo_jax.errors import HoloError
    import pytest

    run = tmp_path / "run"
    log = AuditLog(run / "audit", load_signing_key(), log_name="audit")
    log.append({"type": "event", "event": {"kind": "x"}})
    log.close()
    path = run / "audit" / "log.jsonl"
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"kind":"x"', b'"kind":"y"'))
    with pytest.raises(HoloError, match="damaged at record 1"):
        AuditLog(run / "audit", load_signing_key(), log_name="audit")
    assert path.read_bytes() == data.replace(b'"kind":"x"', b'"kind":"y"')  # untouched


def test_two_writers_are_refused(tmp_path):
    import pytest
    from holo_jax.errors import HoloError

    first = AuditLog(tmp_path / "audit", load_signing_key(), log_name="audit")
    with pytest.raises(HoloError, match="another process is writing"):
        AuditLog(tmp_path / "audit", load_signing_key(), log_name="audit")
    first.close()
