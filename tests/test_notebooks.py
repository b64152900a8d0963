"""Every notebook under notebooks/ runs top to bottom (in a fresh interpreter, on tiny configs).

The code cells are executed in order in one subprocess, which is what "Run all" does, without
pulling Jupyter into the test dependencies; a cell's failure fails the test with its traceback.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def notebook_script(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    return "\n\n".join(code)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the notebook picks its own devices
    env["TMPDIR"] = str(tmp_path)  # its tempfile workdirs land where pytest cleans up, not in /tmp
    proc = subprocess.run([sys.executable, "-c", notebook_script(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
