"""What the experiment entry points share on their command line: `--plugin` imports and JSON-lines
outputs written so that a failure never leaves half a file."""
from __future__ import annotations

import argparse
import importlib
import json
import os
from typing import Any, Iterable, Sequence

from holo_jax.errors import HoloError


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit status 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see `{self.prog} --help`.\n")


def import_plugins(modules: Sequence[str]) -> None:
    """Import each `--plugin MODULE` (modules that register stage kinds), or say which one cannot be."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise HoloError(f"--plugin {module} cannot be imported ({e}); give an importable module name.") from None


def write_json_lines(path: str, records: Iterable[Any], flag: str) -> None:
    """One JSON object per line, written aside, fsynced and renamed over `path` (the value of the
    option `flag`), so a failure leaves the old file or none, never half a new one."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise HoloError(f"cannot write {flag} {path} ({e.strerror}); give a path in a writable directory.") from None
