"""Governance: a tamper-evident audit log of every run, checkpoint provenance, policy gates, and
the ISO/IEC 27001 / 23894 control matrix built from them.

  AuditSink            the audit log as a sink of the loop's one event stream (audit.py)
  run_sinks            one call for an experiment: [AuditSink, PolicyGateSink], before-training gate checked
  log_report           log a report file by sha256 in events.jsonl and the audit log
  record_report        write a report into DIR/reports/ and log it (fairness_eval, explain --record)
  verify_run           check every log of a run (what `python -m holo_jax.governance verify` runs)
  load_policy          a YAML policy of CEL conditions, checked at load time
  release              the release gate (allow: a signed release record; deny: nothing released)
  control_report       the control matrix and risk register of a run
"""
import importlib
from typing import Any

# Imported on first use (PEP 562), so `verify`/`prove` start without JAX: the sinks import
# holo_jax.train, which imports jax, and a verify of a big log should not pay two seconds for it.
_EXPORTS = {
    "AuditLog": "log_writer", "AuditSink": "audit", "canonical_json": "canonical", "control_report": "controls",
    "write_control_report": "controls", "PolicyGateSink": "gates", "check_before_training": "gates",
    "require_before_training": "gates", "CompactTree": "merkle", "consistency_proof": "merkle",
    "inclusion_proof": "merkle", "leaf_hash": "merkle", "node_hash": "merkle", "root_from_leaf_hashes": "merkle",
    "verify_consistency": "merkle", "verify_inclusion": "merkle", "Decision": "policy", "Policy": "policy",
    "load_policy": "policy", "ReleaseResult": "release_gate", "release": "release_gate", "log_report": "run",
    "run_sinks": "run", "record_report": "run", "SigningKey": "signing", "load_signing_key": "signing", "write_private_key": "signing",
    "RunCheck": "verify", "verify_run": "verify",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"holo_jax.governance.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'holo_jax.governance' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
