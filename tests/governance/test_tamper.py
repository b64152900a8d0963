"""verify catches every class of tampering (>= 200 random mutations) and raises no false alarm on 50
intact logs. Logs are built through the API (tests/governance/logs.py), not by training."""
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from holo_jax.governance.signing import load_signing_key
from holo_jax.governance.verify import verify_run
from tests.governance.logs import CLASSES, build_run, entry, lines, mutate, rechain, write_lines

ROOT = Path(__file__).resolve().parents[2]
N_RUNS = 50
MUTATIONS_PER_CLASS = 13  # 16 classes x 13 = 208


@pytest.fixture(scope="module")
def intact_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("intact")
    return [build_run(base / f"run{i}", random.Random(i)) for i in range(N_RUNS)]


def test_no_false_alarm_on_50_intact_runs(intact_runs):
    for run in intact_runs:
        result = verify_run(run)
        assert result.ok, (run, result.first_error.error)
        log = result.logs[0]
        assert not log.warnings and log.signed_size == log.records and log.checkpoints_verified >= 1, log


def test_every_mutation_is_caught(intact_runs, tmp_path):
    rng = random.Random(1234)
    caught: dict[str, int] = {}
    for k in range(MUTATIONS_PER_CLASS):
        for cls in CLASSES:
            source = rng.choice(intact_runs)
            work = tmp_path / f"{cls}-{k}"
            shutil.copytree(source, work)
            before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
            what = mutate(work, cls, rng)
            after = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
            assert before != after, what  # the mutation really changed something
            # Checkpoint paths are recorded relative to the run, so the copy verifies like the original.
            result = verify_run(work)
            assert not result.ok, f"{cls}: {what} was not caught"
            assert result.first_error.error, what
            caught[cls] = caught.get(cls, 0) + 1
            shutil.rmtree(work)
    assert sum(caught.values()) >= 200 and set(caught) == set(CLASSES)


def test_a_forged_rewrite_under_a_new_key_is_caught_by_a_pinned_key(tmp_path):
    """Someone who rewrites the whole log and re-signs it with a key of their own leaves a log that is
    self-consistent; pinning the run's real key (--trusted-key) catches it, and the summary names the
    key so a reader can compare."""
    key = load_signing_key()
    run = build_run(tmp_path / "run", random.Random(7), sessions=1)
    pub = tmp_path / "trusted.pem"
    # The run above used an ephemeral key: rebuild it with `key` so there is a real key to pin.
    shutil.rmtree(run)
    from holo_jax.governance.audit import AuditSink
    sink = AuditSink(run, signing_key=key, process_index=0, process_count=1)
    sink.event({"time": 1.0, "kind": "run_start", "host": "h", "config": {}})
    sink.close()
    pub.write_text(key.public_pem)
    assert verify_run(run, trusted_keys=[key.key_id]).ok
    forged = tmp_path / "forged"
    forger = AuditSink(forged, signing_key=load_signing_key(), process_index=0, process_count=1)
    forger.event({"time": 1.0, "kind": "run_start", "host": "h", "config": {"forged": True}})
    forger.close()
    assert verify_run(forged).ok  # self-consistent ...
    result = verify_run(forged, trusted_keys=[key.key_id])
    assert not result.ok and "trusted" in result.first_error.error  # ... but not signed by the pinned key
    proc = subprocess.run([sys.executable, "-m", "holo_jax.governance", "verify", str(forged), "--trusted-key", str(pub)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "FAIL" in proc.stdout and "first bad record" in proc.stdout, proc.stdout


def test_verify_cli_prints_summary_or_first_bad_record(intact_runs, tmp_path):
    run = intact_runs[3]
    ok = subprocess.run([sys.executable, "-m", "holo_jax.governance", "verify", str(run)], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("OK") and "ephemeral key" in ok.stdout, ok.stdout + ok.stderr
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    rows = lines(bad / "audit" / "log.jsonl")
    es = [entry(r) for r in rows]
    es[4]["record"]["event"]["time"] = 0.0
    write_lines(bad / "audit" / "log.jsonl", rows[:4] + rechain(es)[4:5] + rows[5:])  # record 4 edited, rehashed
    proc = subprocess.run([sys.executable, "-m", "holo_jax.governance", "verify", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout
    assert "record 5 does not follow record 4" in proc.stdout and "first bad record (5)" in proc.stdout, proc.stdout
    missing = subprocess.run([sys.executable, "-m", "holo_jax.governance", "verify", str(tmp_path / "nope")], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr
