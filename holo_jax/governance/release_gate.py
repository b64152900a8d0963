"""The release gate: `python -m holo_jax.governance release DIR --policy FILE`.

Gathers what the `before_release` rules see, decides, and logs the decision (with every reason)
as a `release_decision` event in DIR/events.jsonl and the audit log, through the one event API:
  audit       the verification of every audit log of the run (ok, records, heads, ...)
  metrics     the last evaluation row of metrics.jsonl (the last row if none was evaluated)
  reports     {kind: the report's JSON} for each report logged by digest whose bytes still match
  checkpoint  the latest checkpoint whose files match their logged provenance
  config      the run's config (config.json)
Allow: DIR/release.json, a DSSE-signed in-toto statement whose subject is that checkpoint's
digest, naming the policy (by sha256), the decisions and the verified audit heads. Deny: nothing
is released, and a release.json from an earlier allow is moved aside (release.revoked-<time>.json),
so a checkpoint never stays released after a denial.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from holo_jax.governance.audit import AuditSink
from holo_jax.governance.canonical import canonical_json
from holo_jax.governance.policy import Decision, Policy
from holo_jax.governance.provenance import file_sha256
from holo_jax.governance.signing import INTOTO_PAYLOAD_TYPE, SigningKey, sign_envelope, statement
from holo_jax.governance.verify import RunCheck, verify_run
from holo_jax.train.jsonl import read_metrics
from holo_jax.train.sinks import CompositeSink, EventsJsonl

RELEASE_FILE = "release.json"
RELEASE_PREDICATE = "https://holo-jax.dev/release/v1"


@dataclasses.dataclass
class ReleaseResult:
    allowed: bool
    decisions: list[Decision]
    checkpoint: dict | None
    record: str | None  # path of release.json on allow


def gather(workdir: Path, check: RunCheck) -> tuple[dict[str, Any], list[Decision]]:
    """The variables the before_release rules see, and the built-in decisions (reports intact, a
    checkpoint with provenance) that no policy can switch off."""
    built_in: list[Decision] = []
    primary = check.logs[0]
    audit = {"ok": check.ok, "records": sum(c.records for c in check.logs), "heads": sum(c.heads for c in check.logs),
             "sessions": sum(c.sessions for c in check.logs), "warnings": sum(len(c.warnings) for c in check.logs),
             "ephemeral_key": any(s == "ephemeral" for c in check.logs for s in c.keys.values()),
             "error": (check.first_error.error if check.first_error else ""),
             "checkpoints_verified": primary.checkpoints_verified}
    rows = read_metrics(workdir / "metrics.jsonl")
    evaluated = [r for r in rows if "eval_loss" in r]
    metrics = evaluated[-1] if evaluated else (rows[-1] if rows else {})
    reports: dict[str, Any] = {}
    checkpoint = None
    latest_report: dict[str, dict] = {}  # kind -> its last `report` event: a later log supersedes an earlier
    for r in primary.entries if check.ok else []:
        if r.get("type") == "event" and r["event"].get("kind") == "report":
            latest_report[r["event"].get("report_kind")] = r["event"]
        if r.get("type") == "checkpoint_provenance" and (workdir / r["name"]).is_dir():
            checkpoint = {"step": r["step"], "name": r["name"], "digest": r["digest"]["sha256"]}
    for kind, ev in latest_report.items():
        path = Path(ev["path"]) if os.path.isabs(ev["path"]) else workdir / ev["path"]
        if not (path.is_file() and file_sha256(path)[0] == ev["sha256"]):
            built_in.append(Decision(f"report_{kind}_intact", False, "deny",
                                     f"the {kind} report {path} is missing or differs from the sha256 logged for it"))
            continue
        try:
            reports[kind] = json.loads(path.read_text())
        except ValueError:
            built_in.append(Decision(f"report_{kind}_readable", False, "deny", f"the {kind} report {path} is not JSON"))
    if check.ok and checkpoint is None:
        built_in.append(Decision("checkpoint_with_provenance", False, "deny",
                                 "no checkpoint on disk has logged provenance (was the run made with --no-audit?)"))
    try:
        config = json.loads((workdir / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        config = {}
    return {"audit": audit, "metrics": metrics, "reports": reports, "checkpoint": checkpoint or {},
            "config": config}, built_in


def release(workdir: str | Path, policy: Policy, signing_key: SigningKey) -> ReleaseResult:
    workdir = Path(workdir).absolute()
    check = verify_run(workdir)
    variables, built_in = gather(workdir, check)
    decisions = built_in + policy.evaluate("before_release", variables)
    allowed = all(d.passed for d in decisions)
    checkpoint = variables["checkpoint"] or None
    heads = [{"process": c.process, "size": c.signed_size, "root_sha256": c.head_list[-1]["root_sha256"]}
             for c in check.logs if c.head_list]
    # A log that does not verify is never appended to (the writer refuses it): the denial then goes
    # to events.jsonl alone, saying why.
    sinks = [EventsJsonl(workdir)]
    if check.ok:
        sinks.append(AuditSink(workdir, signing_key=signing_key, process_index=0, process_count=1))
    events = CompositeSink(sinks)
    record_path = None
    try:
        events.event("release_decision", allowed=allowed, policy=policy.path, policy_sha256=policy.sha256,
                     checkpoint=checkpoint, decisions=[d.as_dict() for d in decisions], audit_heads=heads,
                     **({} if check.ok else {"not_in_audit_log": "the audit log does not verify"}))
        target = workdir / RELEASE_FILE
        if allowed:
            stmt = statement([{"name": checkpoint["name"], "digest": {"sha256": checkpoint["digest"]}}],
                             RELEASE_PREDICATE, {"policy": policy.path, "policy_sha256": policy.sha256,
                                                 "decisions": [d.as_dict() for d in decisions],
                                                 "audit_heads": heads, "time": time.time()})
            envelope = sign_envelope(signing_key, INTOTO_PAYLOAD_TYPE, stmt)
            tmp = target.with_name(f".{RELEASE_FILE}.tmp")
            with open(tmp, "wb") as f:
                f.write(canonical_json(envelope) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            record_path = str(target)
            events.event("released", checkpoint=checkpoint, release_sha256=file_sha256(target)[0],
                         path=RELEASE_FILE)
        elif target.exists():
            revoked = target.with_name(f"release.revoked-{int(time.time())}.json")
            os.replace(target, revoked)
            events.event("release_revoked", path=revoked.name, sha256=file_sha256(revoked)[0])
    finally:
        events.close()
    return ReleaseResult(allowed, decisions, checkpoint, record_path)
