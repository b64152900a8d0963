"""experiments.bench_audit: its verify/proof figures on a small log, and its argument checks."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import bench_audit
from holo_jax.errors import HoloError

ROOT = Path(__file__).resolve().parents[2]


def test_verify_and_proof_figures_on_a_small_log():
    proc = subprocess.run([sys.executable, "-m", "experiments.bench_audit", "--json", "--records", "3000",
                           "--verify-repeats", "1", "--skip-training"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verify"]["records"] == 3000 and out["verify"]["median_seconds"] > 0
    # ceil(log2(3000)) = 12 hashes for a leaf at n // 3 in a tree of 3000.
    assert out["proof"]["inclusion_hashes"] == 12 and out["proof"]["inclusion_bytes"] == 384


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--steps", "1"], "--steps must be at least 2"),
    (["--records", "0"], "--records must be at least 1"),
])
def test_bad_arguments(argv, message):
    with pytest.raises(HoloError, match=message):
        bench_audit.main(argv)
