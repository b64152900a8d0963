"""The audit log and gates on real (tiny) training runs: one stream feeds events.jsonl and the audit
log, checkpoints carry signed provenance, verify/prove/release/controls work on the run, and the
during-training gate stops a run cleanly with a checkpoint."""
import base64
import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from holo_jax.config import CheckpointConfig
from holo_jax.governance import run_sinks
from holo_jax.governance.merkle import verify_inclusion
from holo_jax.governance.provenance import files_digest
from holo_jax.governance.signing import load_public_pem, open_envelope
from holo_jax.governance.verify import verify_run
from holo_jax.train.jsonl import read_jsonl
from holo_jax.train.loop import train
from tests.train.test_loop import small

ROOT = Path(__file__).resolve().parents[2]
STEPS = 8


def gov(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "holo_jax.governance", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def audit_records(workdir, process=None):
    path = Path(workdir) / "audit" / (f"process-{process}" if process else "") / "log.jsonl"
    return [json.loads(line)["record"] for line in path.read_bytes().split(b"\n")[:-1]]


def run_config():
    cfg = small(STEPS)
    return dataclasses.replace(cfg, checkpoint=CheckpointConfig(every_steps=4, keep=2),
                               log=dataclasses.replace(cfg.log, eval_every_steps=4, eval_batches=1))


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("audited") / "run"
    cfg = run_config()
    result = train(cfg, workdir, sinks=run_sinks(workdir, cfg.to_dict()))
    assert result.reason == "completed"
    return workdir


def test_one_stream_feeds_events_and_audit(audited_run):
    events = read_jsonl(audited_run / "events.jsonl")
    logged = [r["event"] for r in audit_records(audited_run) if r["type"] == "event"]
    assert logged == events  # the same records, in the same order: no second logging path
    kinds = [e["kind"] for e in events]
    for kind in ("run_start", "data_lineage", "policy_decision", "checkpoint_saved", "run_end"):
        assert kind in kinds, kinds
    lineage = next(e for e in events if e["kind"] == "data_lineage")
    assert lineage["source"] == "embedded" and lineage["splits"][0]["split"] == "train"
    env = next(r for r in audit_records(audited_run) if r["type"] == "environment")
    assert len(env["config_sha256"]) == 64 and env["packages"]["jax"] and env["devices"]
    assert "code_revision" in env and "code_dirty" in env


def test_checkpoints_have_signed_provenance(audited_run):
    records = audit_records(audited_run)
    opened = next(r for r in records if r["type"] == "audit_opened")
    keys = {opened["key"]["key_id"]: load_public_pem(opened["key"]["public_pem"])}
    prov = [r for r in records if r["type"] == "checkpoint_provenance"]
    assert [r["step"] for r in prov] == [4, 8]
    for r in prov:
        stmt, _ = open_envelope(r["envelope"], keys)
        assert stmt["_type"] == "https://in-toto.io/Statement/v1"
        assert stmt["subject"][0]["name"] == f"checkpoints/{r['step']}"
        assert stmt["subject"][0]["digest"]["sha256"] == files_digest(stmt["predicate"]["files"]) == r["digest"]["sha256"]
    result = verify_run(audited_run)
    assert result.ok and result.logs[0].checkpoints_verified == 2, result.summary()


def test_verify_and_prove_cli(audited_run):
    ok = gov("verify", str(audited_run))
    assert ok.returncode == 0 and "OK" in ok.stdout and "ephemeral key" in ok.stdout, ok.stdout + ok.stderr
    proof = gov("prove", str(audited_run), "--record", "3")
    assert proof.returncode == 0, proof.stderr
    out = json.loads(proof.stdout)
    assert out["verified"] is True and out["signed_head"]["size"] == out["tree_size"]
    # Checked here from the printed values alone, against the root the signed head carries.
    assert verify_inclusion(bytes.fromhex(out["leaf_hash"]), 3, out["tree_size"],
                            [bytes.fromhex(p) for p in out["inclusion_proof"]],
                            bytes.fromhex(out["signed_head"]["root_sha256"]))
    bad = gov("prove", str(audited_run), "--record", "100000")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --record 100000 is not in the tree")
    consistency = json.loads(gov("prove", str(audited_run), "--consistency-from", "2").stdout)
    assert consistency["verified"] is True


def test_changed_checkpoint_bytes_are_caught(audited_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(audited_run, copy)
    target = max((p for p in (copy / "checkpoints" / "8").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))
    proc = gov("verify", str(copy))
    assert proc.returncode == 1 and "checkpoints/8 no longer matches its logged digest" in proc.stdout, proc.stdout
    assert target.relative_to(copy / "checkpoints" / "8").as_posix() in proc.stdout


def test_release_allow_then_deny(audited_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(audited_run, run)
    allow = gov("release", str(run))
    assert allow.returncode == 0 and "allowed: checkpoint checkpoints/8" in allow.stdout, allow.stdout + allow.stderr
    envelope = json.loads((run / "release.json").read_text())
    payload = json.loads(base64.b64decode(envelope["payload"]))
    prov = [r for r in audit_records(run) if r["type"] == "checkpoint_provenance"][-1]
    assert payload["subject"][0]["digest"]["sha256"] == prov["digest"]["sha256"]
    decisions = [r["event"] for r in audit_records(run) if r["type"] == "event" and r["event"]["kind"] == "release_decision"]
    assert decisions[-1]["allowed"] is True
    assert gov("verify", str(run)).returncode == 0  # the release session is part of the log now
    forged = tmp_path / "forged"
    shutil.copytree(run, forged)
    from holo_jax.governance.signing import load_signing_key, sign_envelope
    fake = sign_envelope(load_signing_key(), envelope["payloadType"], payload)  # same statement, another key
    (forged / "release.json").write_text(json.dumps(fake))
    proc = gov("verify", str(forged))
    assert proc.returncode == 1 and "release.json does not verify" in proc.stdout, proc.stdout

    strict = tmp_path / "strict.yaml"
    strict.write_text(textwrap.dedent("""
    gates:
      before_release:
        - {name: audit_ok, condition: audit.ok}
        - {name: very_low_loss, condition: 'metrics.eval_loss < 0.01', reason: eval loss must be below 0.01}
    """))
    deny = gov("release", str(run), "--policy", str(strict))
    assert deny.returncode == 1, deny.stdout + deny.stderr
    assert "FAIL very_low_loss: eval loss must be below 0.01" in deny.stdout and "denied" in deny.stdout
    assert not (run / "release.json").exists() and list(run.glob("release.revoked-*.json"))  # unreleased
    decisions = [r["event"] for r in audit_records(run) if r["type"] == "event" and r["event"]["kind"] == "release_decision"]
    assert decisions[-1]["allowed"] is False and any(d["rule"] == "very_low_loss" and not d["passed"]
                                                       for d in decisions[-1]["decisions"])
    # A run whose log does not verify is never released.
    log = run / "audit" / "log.jsonl"
    log.write_bytes(log.read_bytes().replace(b'"kind":"run_start"', b'"kind":"run_stort"', 1))
    tampered = gov("release", str(run))
    assert tampered.returncode == 1 and "FAIL audit_log_valid" in tampered.stdout, tampered.stdout


def test_control_matrix(audited_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(audited_run, run)
    proc = gov("controls", str(run))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((run / "controls.json").read_text())
    md = (run / "controls.md").read_text()
    assert "not a certification" in report["disclaimer"] and "not a certification" in md
    controls = {c["control"]: c for c in report["iso27001_annex_a"]}
    assert set(controls) >= {"5.9", "8.9", "8.15", "8.16", "8.17", "8.24", "8.25", "8.32"}
    for cid in ("5.9", "8.9", "8.15", "8.24", "8.25"):
        assert controls[cid]["status"].startswith("evidenced") and controls[cid]["records"], controls[cid]
    assert [p["step"] for p in report["iso23894_process"]] == ["context", "identification", "analysis", "evaluation",
                                                               "treatment", "monitoring", "recording"]
    assert len(report["risk_register"]) >= 6
    records = audit_records(run)
    for i in controls["5.9"]["records"]:  # the evidence indices point at the records they name
        assert records[i]["type"] == "checkpoint_provenance" or records[i]["event"]["kind"] in ("data_lineage", "report")


@pytest.mark.slow
def test_policy_stops_training_cleanly_then_resume_verifies(tmp_path):
    stop = tmp_path / "stop.yaml"
    stop.write_text(textwrap.dedent("""
    gates:
      during_training:
        - {name: loss_below_one, condition: 'row.loss < 1.0', action: stop, reason: demo stop}
        - {name: grad_small, condition: 'row.grad_norm < 0.0', action: warn}
    """))
    cfg = small(STEPS)
    workdir = tmp_path / "run"
    result = train(cfg, workdir, sinks=run_sinks(workdir, cfg.to_dict(), policy=stop))
    assert result.reason == "policy:loss_below_one" and result.stopped_early and result.final_step < STEPS
    events = read_jsonl(workdir / "events.jsonl")
    kinds = [e["kind"] for e in events]
    assert "policy_decision" in kinds and "stop_requested" in kinds and "stopped_on_request" in kinds
    assert "policy_warning" in kinds
    saved = [e["step"] for e in events if e["kind"] == "checkpoint_saved"]
    assert result.final_step in saved  # stopped with a checkpoint
    # Resumed under the default policy, the run completes; the log now has two sessions and verifies.
    resumed = train(cfg, workdir, sinks=run_sinks(workdir, cfg.to_dict()))
    assert resumed.reason == "completed"
    check = verify_run(workdir, strict=True)
    assert check.ok and check.logs[0].sessions == 2, check.summary()


def test_pretrain_cli_gate_denies_before_training_and_no_audit(tmp_path):
    deny = tmp_path / "deny.yaml"
    deny.write_text("datasets: {c4: {license: ODC-BY-1.0}}\ngates:\n  before_training:\n"
                    "    - {name: dataset_allowed, condition: config.data.source in datasets, reason: not allowed}\n")
    from tests.train.test_cli import pretrain
    proc = pretrain(tmp_path / "denied", "--steps", "2", "--policy", str(deny))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert "denies before training: dataset_allowed: not allowed" in line
    assert not (tmp_path / "denied" / "checkpoints").exists()
    denied = [r["event"] for r in audit_records(tmp_path / "denied") if r["type"] == "event"]
    assert denied[-1]["kind"] == "policy_decision" and denied[-1]["allowed"] is False
    assert read_jsonl(tmp_path / "denied" / "events.jsonl")[-1] == denied[-1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("gates:\n  before_training:\n    - {name: r, condition: 'config.stepz > 0'}\n")
    proc = pretrain(tmp_path / "bad", "--steps", "2", "--policy", str(bad), "--no-audit")
    assert proc.returncode == 2 and "unknown field `config.stepz`" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_reports_logged_by_digest_gate_the_release(audited_run, tmp_path):
    from holo_jax.governance import load_policy, log_report, release
    from holo_jax.governance.signing import load_signing_key

    run = tmp_path / "run"
    shutil.copytree(audited_run, run)
    report = run / "fairness.json"
    report.write_text(json.dumps({"axes": [{"axis": "gender", "auc_gap": 0.3}]}))
    logged = log_report(run, "fairness", report)
    assert logged["sha256"] and read_jsonl(run / "events.jsonl")[-1]["kind"] == "report"
    result = release(run, load_policy(), load_signing_key())
    assert not result.allowed and [d.rule for d in result.decisions if not d.passed] == ["fairness_gaps"]
    report.write_text(json.dumps({"axes": [{"axis": "gender", "auc_gap": 0.01}]}))  # edited after logging
    result = release(run, load_policy(), load_signing_key())
    assert not result.allowed and "report_fairness_intact" in [d.rule for d in result.decisions if not d.passed]
    log_report(run, "fairness", report)  # logged again: the new digest supersedes the old
    result = release(run, load_policy(), load_signing_key())
    assert result.allowed, [d for d in result.decisions if not d.passed]
    assert verify_run(run).ok
