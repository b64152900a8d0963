"""`AuditSink`: the run's audit log (log_writer.AuditLog) fed by the loop's one event stream.

It is a holo_jax.train.sinks.Sink: every event the loop emits becomes an `event` record (the same
records events.jsonl gets, so there is one logging path); `run_start`/`resume` add an
`environment` record (config digest, code revision and dirty flag, package versions, host,
devices); `checkpoint_saved` adds a `checkpoint_provenance` record holding a signed in-toto
statement over the checkpoint's file digests, and on process 0 of a multi-process run a
`peer_heads` record with every other process's latest signed head. Heads are signed at open, at
each `sync()` (before every checkpoint), after each checkpoint's provenance, at run end and close.
"""
from __future__ import annotations

import functools
import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from holo_jax.governance import log_format as fmt
from holo_jax.governance.canonical import canonical_json
from holo_jax.governance.log_writer import AuditLog
from holo_jax.governance.provenance import checkpoint_statement, directory_files
from holo_jax.governance.signing import INTOTO_PAYLOAD_TYPE, SigningKey, load_signing_key, sign_envelope
from holo_jax.train.sinks import Sink

PACKAGES = ("holo_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "cryptography",
            "cel-python", "PyYAML")


def environment(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Config digest, code revision and dirty flag, package versions, interpreter, host and devices."""
    versions = package_versions()
    env = {"config_sha256": hashlib.sha256(canonical_json(config)).hexdigest() if config is not None else None,
           **code_revision(), "packages": dict(versions), "python": sys.version.split()[0], "host": socket.gethostname()}
    if "jax" in sys.modules:  # the loop has started jax; never start it here (verify/release need no jax)
        import jax

        env["devices"] = [{"id": d.id, "platform": d.platform, "kind": d.device_kind, "process": d.process_index}
                          for d in jax.local_devices()]
    return env


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Installed versions (read once per process: packages do not change under a running program)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_revision() -> dict[str, Any]:
    """The git commit of the holo_jax source tree and whether it has uncommitted changes (None
    where the code is not a git checkout, e.g. an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return {"code_revision": None, "code_dirty": None}
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"code_revision": rev.stdout.strip(), "code_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"code_revision": None, "code_dirty": None}


class AuditSink(Sink):
    """The run's audit log as a sink of the loop's one event stream (see the module docstring)."""

    def __init__(self, workdir: str | Path, *, signing_key: SigningKey | str | Path | None = None,
                 process_index: int | None = None, process_count: int | None = None):
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        self.workdir = Path(workdir).absolute()
        self.process_index, self.process_count = process_index, process_count
        # The key is read now, so a bad one fails before training; the log is opened at the loop's
        # first call (rewind), after the loop has checked the workdir: a run refused for holding
        # another run's files leaves nothing behind, not even an audit record.
        self.key = signing_key if isinstance(signing_key, SigningKey) else load_signing_key(signing_key)
        self._log: AuditLog | None = None
        self._closed = False
        self._config_sha256: str | None = None

    @property
    def log(self) -> AuditLog:
        if self._log is None:
            if self._closed:
                raise RuntimeError("the audit sink is closed")
            directory = fmt.audit_dir(self.workdir, self.process_index)
            self._log = AuditLog(directory, self.key, process_index=self.process_index,
                                 log_name=directory.relative_to(self.workdir).as_posix(),
                                 opened={"process_count": self.process_count})
        return self._log

    def event(self, record: Mapping[str, Any]) -> None:
        self.log.append({"type": "event", "event": dict(record)})
        kind = record.get("kind")
        if kind in ("run_start", "resume"):
            config = record.get("config") if kind == "run_start" else _recorded_config(self.workdir)
            env = environment(config)
            self._config_sha256 = env["config_sha256"]
            self.log.append({"type": "environment", "for": kind, **env})
        elif kind == "checkpoint_saved":
            if self.process_index == 0:  # the checkpoint directory is shared: digested once, by process 0
                self._provenance(record)
                self._peer_heads(int(record["step"]))
            self.log.sign_head()
        elif kind == "run_end":
            self.log.sign_head()

    def _provenance(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        directory = Path(record["directory"]) / str(step)
        if not directory.is_dir():
            self.log.append({"type": "checkpoint_missing", "step": step, "directory": str(directory)})
            return
        files = directory_files(directory)
        name = _relative(directory, self.workdir)
        run = {"config_sha256": self._config_sha256, "workdir": str(self.workdir)}
        envelope = sign_envelope(self.key, INTOTO_PAYLOAD_TYPE, checkpoint_statement(name, step, files, run))
        self.log.append({"type": "checkpoint_provenance", "step": step, "name": name,
                         "digest": {"sha256": _subject_digest(envelope)}, "envelope": envelope})

    def _peer_heads(self, step: int) -> None:
        """Process 0 records each other process's latest signed head. They wrote it at the sync()
        before this checkpoint's save, and the save's commit waits for every process, so the head
        read here covers at least everything they logged before the checkpoint. Read from the shared
        workdir (a multihost gather from inside a sink could pair with the trainer's collectives)."""
        if self.process_count <= 1:
            return
        heads = {}
        for k in range(1, self.process_count):
            path = fmt.audit_dir(self.workdir, k) / fmt.HEAD
            try:
                heads[str(k)] = json.loads(path.read_bytes())
            except (OSError, ValueError):
                heads[str(k)] = None
        self.log.append({"type": "peer_heads", "step": step, "heads": heads})

    def rewind(self, step: int) -> dict[str, int]:
        return {"audit:torn_bytes_cut": self.log.repaired_bytes} if self.log.repaired_bytes else {}

    def sync(self) -> None:
        if self._log is not None:
            self._log.sign_head()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
        self._closed = True


def _recorded_config(workdir: Path) -> dict | None:
    """The config a resumed run started with (config.json, written by the loop's run record)."""
    try:
        return json.loads((workdir / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _subject_digest(envelope: Mapping[str, Any]) -> str:
    import base64

    return json.loads(base64.b64decode(envelope["payload"]))["subject"][0]["digest"]["sha256"]


def _relative(path: Path, base: Path) -> str:
    try:
        return path.absolute().relative_to(base).as_posix()
    except ValueError:
        return str(path.absolute())
