"""One call per experiment: the governance sinks for a training run, and reports logged by digest.

    sinks = run_sinks(workdir, cfg)                   # [AuditSink, PolicyGateSink]; before-training gate checked
    train(cfg, workdir, sinks=sinks)
    log_report(workdir, "fairness", workdir / "report.json")   # after the run, outside train()

Both write through the same event API the loop uses (CompositeSink.event): `log_report` opens
DIR/events.jsonl and the audit log together, so a report is in both, exactly like a training event.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from holo_jax.errors import HoloError
from holo_jax.governance.audit import AuditSink
from holo_jax.governance.gates import PolicyGateSink, denial_message, check_before_training
from holo_jax.governance.policy import Policy, load_policy
from holo_jax.governance.provenance import file_sha256
from holo_jax.governance.signing import SigningKey, load_signing_key
from holo_jax.train.sinks import CompositeSink, EventsJsonl, Sink

REPORT_KINDS = ("fairness", "explanation", "drift", "evaluation")


def run_sinks(workdir: str | Path, config: Mapping[str, Any] | None = None, *, policy: str | Path | Policy | None = None,
              signing_key: str | Path | SigningKey | None = None, audit: bool = True,
              gates: bool = True) -> list[Sink]:
    """The audit sink (unless `audit=False`) and the during-training gate for `train(..., sinks=...)`.

    With `config` (the resolved config as a dict) the before-training gate runs first: a denial
    raises HoloError (exit 2) naming every failed rule, and is logged in the audit log. `policy`:
    a YAML file (default: the shipped policies/default.yaml)."""
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    decisions = check_before_training(pol, config) if (gates and config is not None) else None
    sinks: list[Sink] = []
    if audit:
        sinks.append(AuditSink(workdir, signing_key=_key(signing_key)))
    if decisions is not None and any(not d.passed for d in decisions):
        message = denial_message(pol, "before_training", decisions)
        if audit:  # the denial is history too: events.jsonl (process 0) and the audit log, one event API
            primary = sinks[0].process_index == 0
            events = CompositeSink(([EventsJsonl(workdir)] if primary else []) + sinks)
            _log_denial(events, pol, decisions)
            events.close()
        raise HoloError(message + "; change the run's settings or the policy.")
    if gates:
        sinks.append(PolicyGateSink(pol, decisions))
    return sinks


def _log_denial(events: CompositeSink, policy: Policy, decisions) -> None:
    events.event("policy_decision", gate="before_training", step=0, allowed=False, policy=policy.path,
                 policy_sha256=policy.sha256, decisions=[d.as_dict() for d in decisions])


def _key(signing_key):
    if isinstance(signing_key, SigningKey):
        return signing_key
    return load_signing_key(signing_key)


def log_report(workdir: str | Path, kind: str, path: str | Path, *, signing_key: str | Path | SigningKey | None = None,
               **fields: Any) -> dict[str, Any]:
    """Log a report (fairness, explanation, drift, ...) by its sha256 in DIR/events.jsonl and the
    audit log; the release gate reads it back (if its bytes still match) as `reports.<kind>`.
    Returns the event's fields."""
    path = Path(path)
    if not path.is_file():
        raise HoloError(f"report {path} does not exist; write the report before logging it.")
    digest, size = file_sha256(path)
    workdir = Path(workdir).absolute()
    try:
        shown = os.path.relpath(path.absolute(), workdir)
    except ValueError:
        shown = str(path.absolute())
    record = {"report_kind": kind, "path": shown, "sha256": digest, "size": size, **fields}
    events = CompositeSink([EventsJsonl(workdir), AuditSink(workdir, signing_key=_key(signing_key),
                                                            process_index=0, process_count=1)])
    try:
        events.event("report", **record)
    finally:
        events.close()
    return record


def record_report(workdir: str | Path, kind: str, report: Mapping[str, Any], *, name: str | None = None,
                  signing_key: str | Path | SigningKey | None = None, **fields: Any) -> dict[str, Any]:
    """Write `report` (JSON) as DIR/reports/<name or kind>.json, atomically, and log it by digest
    (`log_report`): how an evaluation command (fairness_eval, explain) files its result with the
    run it evaluated, for the release gate. A report of the same name is replaced, and the log
    keeps every version's digest."""
    import json

    from holo_jax.train.jsonl import jsonable

    directory = Path(workdir).absolute() / "reports"
    path = directory / f"{name or kind}.json"
    try:
        directory.mkdir(exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(jsonable(dict(report)), allow_nan=False, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise HoloError(f"cannot write {path} ({e.strerror}); the run directory must be writable to --record.") from None
    return log_report(workdir, kind, path, signing_key=signing_key, **fields)
