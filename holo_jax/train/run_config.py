"""What a run directory says the run is: `config.json`, and which settings may change on resume.

`config.json` holds `{"config": <the resolved config the run started with>, "history": [...]}`.
The original is never rewritten. A resume compares the *whole* new config with the effective one
(the original with every recorded change applied): settings on the `MUTABLE_ON_RESUME` list may
differ, and each difference is appended to `history` (and reported as a `config_changed` event);
any other difference is refused in one sentence naming the settings, before anything in the
directory is touched. Why those: `steps` extends a run (the schedule follows it), logging and
checkpoint cadence are bookkeeping, and the mesh, memory budget and microbatch count change
where and how the same arithmetic runs (checkpoints are resharded on restore; accumulation is
exact), not what is being trained. Everything else changes what the checkpoint means.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from holo_jax.errors import HoloError

CONFIG_FILE = "config.json"
# Dotted keys (or section prefixes) that may change when a run resumes.
MUTABLE_ON_RESUME = ("steps", "log", "checkpoint.every_steps", "checkpoint.keep", "checkpoint.async_save",
                     "mesh", "memory", "microbatches")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _unflatten_set(d: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def _mutable(key: str) -> bool:
    return any(key == m or key.startswith(m + ".") for m in MUTABLE_ON_RESUME)


def _load(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HoloError(f"{path} cannot be read ({type(e).__name__}: {e}); restore it from a backup or start a "
                        "new --workdir.") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise HoloError(f"{path} is not a holo_jax run record (no `config` object); start a new --workdir.")
    return record


def effective_config(record: dict) -> dict:
    config = json.loads(json.dumps(record["config"]))
    for entry in record.get("history", []):
        for key, (_, new) in entry["changes"].items():
            _unflatten_set(config, key, new)
    return config


def plan_resume(workdir: Path, config: dict, data_fingerprint: str | None = None
                ) -> tuple[dict | None, dict[str, list]]:
    """(the record to write, the accepted changes) for starting or resuming `config` in `workdir`.
    Raises HoloError, touching nothing, if the directory holds a run with other fixed settings or
    whose training data (`data_fingerprint`, where the source has one) has changed since."""
    config = json.loads(json.dumps(config))  # tuples -> lists, as read back from disk
    path = workdir / CONFIG_FILE
    if not path.exists():
        return {"config": config, "history": [], "data_fingerprint": data_fingerprint}, {}
    record = _load(path)
    recorded = record.get("data_fingerprint")
    if recorded and data_fingerprint and recorded != data_fingerprint:
        raise HoloError(
            f"the training data of {workdir} changed since the run started (its sha256 fingerprint was "
            f"{recorded[:12]}..., now {data_fingerprint[:12]}...), so the checkpointed data position no longer "
            "points at the same text; restore the original files or start a new --workdir.")
    old, new = _flatten(effective_config(record)), _flatten(config)
    changed = {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    fixed = {k: v for k, v in changed.items() if not _mutable(k)}
    if fixed:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(fixed.items())[:4])
        more = f" and {len(fixed) - 4} more" if len(fixed) > 4 else ""
        raise HoloError(
            f"{workdir} holds a run with other settings ({shown}{more}); only "
            f"{', '.join(MUTABLE_ON_RESUME)} may change on resume: resume with the run's settings "
            f"(see {path}) or start a new --workdir.")
    if not changed:
        return None, {}
    return record, changed


def write_record(workdir: Path, record: dict, changes: dict[str, list], step: int) -> None:
    """Append `changes` (if any) to the history and write config.json aside-and-rename."""
    if changes:
        record = {**record, "history": [*record.get("history", []),
                                         {"time": time.time(), "resumed_at_step": step, "changes": changes}]}
    path = workdir / CONFIG_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
