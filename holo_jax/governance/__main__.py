"""`python -m holo_jax.governance {verify,prove,release,controls,keygen} ...`

  verify DIR [--trusted-key PEM ...] [--strict] [--no-checkpoints] [--json]
      exit 0 and a summary if every audit log of the run is intact; exit 1 and the first bad
      record otherwise (see holo_jax/governance/verify.py for what is checked)
  prove DIR --record N [--size M] [--process K]
      the RFC 6962 inclusion proof of record N in the tree of the latest signed head (or of size
      M), as JSON; with --consistency-from M0: the consistency proof from size M0 to that head
  release DIR [--policy FILE] [--signing-key FILE]
      allow: writes DIR/release.json (signed), exit 0; deny: prints the reasons, exit 1
  controls DIR [--json]    writes DIR/controls.md and DIR/controls.json
  keygen FILE              writes a new Ed25519 signing key (PKCS#8 PEM, mode 0600)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit status 2, like every other bad input
        self.exit(2, f"error: {message}; see `{self.prog} --help`.\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m holo_jax.governance", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    v = sub.add_parser("verify", help="check every audit log of a run")
    v.add_argument("workdir", metavar="DIR")
    v.add_argument("--trusted-key", action="append", default=[], metavar="PEM",
                   help="a public key (PEM file) the heads must be signed with; repeatable")
    v.add_argument("--strict", action="store_true", help="fail on warnings too (torn tail, unsigned records)")
    v.add_argument("--no-checkpoints", action="store_true", help="skip re-digesting checkpoint files")
    v.add_argument("--json", action="store_true", help="print the whole result as JSON")
    pr = sub.add_parser("prove", help="inclusion (or consistency) proof against a signed head")
    pr.add_argument("workdir", metavar="DIR")
    pr.add_argument("--record", type=int, help="the record's index")
    pr.add_argument("--size", type=int, help="tree size to prove against (default: the latest signed head)")
    pr.add_argument("--consistency-from", type=int, metavar="M0", help="prove the tree of M0 records is a prefix")
    pr.add_argument("--process", type=int, default=0, help="whose log (multi-process runs)")
    r = sub.add_parser("release", help="decide allow/deny under a policy; on allow write a signed release record")
    r.add_argument("workdir", metavar="DIR")
    r.add_argument("--policy", help="YAML policy (default: the shipped holo_jax/governance/policies/default.yaml)")
    r.add_argument("--signing-key", help="Ed25519 private key PEM (else $HOLO_JAX_SIGNING_KEY, else ephemeral)")
    c = sub.add_parser("controls", help="ISO/IEC 27001 / 23894 control matrix and risk register for a run")
    c.add_argument("workdir", metavar="DIR")
    c.add_argument("--json", action="store_true", help="print the report as JSON too")
    k = sub.add_parser("keygen", help="write a new Ed25519 signing key")
    k.add_argument("path", metavar="FILE")
    return p.parse_args(argv)


def _require_run(workdir: str) -> Path:
    from holo_jax.errors import HoloError

    path = Path(workdir)
    if not path.is_dir():
        raise HoloError(f"{workdir} is not a directory; give a run directory (an experiment's --workdir).")
    return path


def _trusted_ids(paths: list[str]) -> list[str]:
    from holo_jax.errors import HoloError
    from holo_jax.governance.signing import key_id, load_public_pem

    ids = []
    for p in paths:
        try:
            ids.append(key_id(load_public_pem(Path(p).read_text())))
        except (OSError, ValueError) as e:
            raise HoloError(f"--trusted-key {p} is not a readable Ed25519 public key PEM ({e}); export one with "
                            f"`openssl pkey -in KEY -pubout`.") from None
    return ids


def _raw_record(path: str, index: int | None) -> str:
    if index is None:
        return ""
    try:
        with open(path, "rb") as f:
            for i, line in enumerate(f):
                if i == index:
                    return line.decode("utf-8", "replace").rstrip("\n")[:600]
    except OSError:
        pass
    return ""


def cmd_verify(args) -> int:
    from holo_jax.governance.verify import verify_run

    result = verify_run(_require_run(args.workdir), trusted_keys=_trusted_ids(args.trusted_key),
                        check_checkpoints=not args.no_checkpoints, strict=args.strict)
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    for c in result.logs:
        name = f"process {c.process}" if len(result.logs) > 1 else "audit log"
        if c.error is not None:
            print(f"FAIL {name} {c.path}: {c.error}")
            raw = _raw_record(c.path, c.bad_record)
            if raw:
                print(f"  first bad record ({c.bad_record}): {raw}")
            continue
        keys = ", ".join(f"{k[:16]} ({'ephemeral key' if s == 'ephemeral' else s})" for k, s in c.keys.items())
        print(f"OK   {name} {c.path}: {c.records} records, {c.heads} signed heads (the last covers {c.signed_size}), "
              f"{c.sessions} sessions, root {c.root[:16]}; keys: {keys}; checkpoints verified {c.checkpoints_verified}"
              f", rotated away {c.checkpoints_rotated}" + (f"; peer heads verified {c.peer_heads_verified}"
                                                            if c.peer_heads_verified else ""))
        for w in c.warnings:
            print(f"  WARNING: {w}")
    return 0 if result.ok else 1


def cmd_prove(args) -> int:
    from holo_jax.errors import HoloError
    from holo_jax.governance import merkle
    from holo_jax.governance.verify import verify_run

    result = verify_run(_require_run(args.workdir), check_checkpoints=False)
    log = next((c for c in result.logs if c.process == args.process), None)
    if log is None or log.error is not None:
        why = "has no such process log" if log is None else f"does not verify ({log.error})"
        raise HoloError(f"{args.workdir} {why}; run `verify` first.")
    head = None
    if args.size is None:
        if not log.head_list:
            raise HoloError(f"{args.workdir} has no signed head to prove against.")
        head = log.head_list[-1]
    size = args.size if args.size is not None else head["size"]
    if not 0 < size <= log.records:
        raise HoloError(f"--size {size} is out of range: the log has {log.records} records.")
    leaves = log.leaves[:size]
    root = merkle.root_from_leaf_hashes(leaves)
    out = {"log": log.path, "tree_size": size, "root_sha256": root.hex(), "signed_head": head}
    if args.consistency_from is not None:
        m = args.consistency_from
        if not 0 < m <= size:
            raise HoloError(f"--consistency-from {m} must be between 1 and {size}.")
        proof = merkle.consistency_proof(leaves, m)
        old = merkle.root_from_leaf_hashes(leaves[:m])
        out.update(old_size=m, old_root_sha256=old.hex(), consistency_proof=[p.hex() for p in proof],
                   verified=merkle.verify_consistency(m, size, old, root, proof))
    else:
        if args.record is None:
            raise HoloError("prove needs --record N (or --consistency-from M0).")
        if not 0 <= args.record < size:
            raise HoloError(f"--record {args.record} is not in the tree of {size} records; give 0..{size - 1}.")
        proof = merkle.inclusion_proof(leaves, args.record)
        out.update(record=args.record, leaf_hash=leaves[args.record].hex(), inclusion_proof=[p.hex() for p in proof],
                   verified=merkle.verify_inclusion(leaves[args.record], args.record, size, proof, root),
                   entry=log.entries[args.record])
    print(json.dumps(out, indent=2))
    return 0


def cmd_release(args) -> int:
    from holo_jax.governance.policy import load_policy
    from holo_jax.governance.release_gate import release
    from holo_jax.governance.signing import load_signing_key

    workdir = _require_run(args.workdir)
    policy = load_policy(args.policy)
    key = load_signing_key(args.signing_key)
    result = release(workdir, policy, key)
    for d in result.decisions:
        print(f"{'pass' if d.passed else 'FAIL'} {d.rule}" + ("" if d.passed else f": {d.reason}"))
    if result.allowed:
        print(f"allowed: checkpoint {result.checkpoint['name']} (sha256 {result.checkpoint['digest'][:16]}) released "
              f"in {result.record}" + (" (signed with an ephemeral key)" if key.ephemeral else ""))
        return 0
    print(f"denied: nothing released ({sum(not d.passed for d in result.decisions)} rule(s) failed); "
          f"the decision is in the audit log")
    return 1


def cmd_controls(args) -> int:
    from holo_jax.governance.controls import write_control_report

    workdir = _require_run(args.workdir)
    report = write_control_report(workdir)
    if args.json:
        print(json.dumps(report, indent=2))
    gaps = [c["control"] for c in report["iso27001_annex_a"] if not c["status"].startswith("evidenced")]
    print(f"wrote {workdir / 'controls.md'} and controls.json; audit log "
          f"{'verifies' if report['audit_ok'] else 'does NOT verify'}; Annex A controls without evidence here: "
          f"{', '.join(gaps) or 'none'} (evidence for an audit, not a certification)")
    return 0


def cmd_keygen(args) -> int:
    from holo_jax.errors import HoloError
    from holo_jax.governance.signing import write_private_key

    try:
        key = write_private_key(args.path)
    except OSError as e:
        raise HoloError(f"cannot write {args.path} ({e.strerror}); give a path in a writable directory.") from None
    print(f"wrote {args.path} (key id {key.key_id}); use it with --signing-key or ${'HOLO_JAX_SIGNING_KEY'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return {"verify": cmd_verify, "prove": cmd_prove, "release": cmd_release, "controls": cmd_controls,
            "keygen": cmd_keygen}[args.command](args)


if __name__ == "__main__":
    from holo_jax.errors import exit_on_user_error

    sys.exit(exit_on_user_error(main)())
