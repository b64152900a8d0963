#!/usr/bin/env python3
"""Create `.venv` from `requirements.lock` (first time, or when the lock changes), then run Python in it.

    python3 bootstrap.py -m experiments.pretrain --workdir runs/quickstart
    python3 bootstrap.py -m pytest

Needs only Python >= 3.11 with `venv`. Installs are reproducible: every package is pinned with
its hashes in requirements.lock (regenerate it with `pip-compile --extra test --generate-hashes
--strip-extras --allow-unsafe -o requirements.lock pyproject.toml`).
"""
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".holo_jax-installed"


def fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("requirements.lock", "pyproject.toml"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def ensure_environment() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"error: holo_jax needs Python >= 3.11, this is {sys.version.split()[0]}; run bootstrap.py with python3.11 or newer.")
    if not PYTHON.exists():
        print(f"bootstrap: creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    want = fingerprint()
    if STAMP.exists() and STAMP.read_text() == want:
        return
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    print("bootstrap: installing pinned dependencies from requirements.lock (first run: a few minutes)", flush=True)
    subprocess.check_call(pip + ["--require-hashes", "-r", str(ROOT / "requirements.lock")])
    subprocess.check_call(pip + ["--no-deps", "-e", str(ROOT)])
    STAMP.write_text(want)


if __name__ == "__main__":
    ensure_environment()
    os.chdir(ROOT)
    os.execv(str(PYTHON), [str(PYTHON), *sys.argv[1:]])
