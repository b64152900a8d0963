"""`python -m experiments.pretrain` as users run it: bad input gets one clear sentence, SIGTERM saves."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from holo_jax.train.jsonl import read_jsonl, read_metrics

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["--set", "log.progress_bar=false", "--set", "log.tensorboard=false", "--set", "log.plot=false"]


def pretrain(workdir, *args, devices: int = 4, timeout: float = 240, wait: bool = True):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "experiments.pretrain", "--workdir", str(workdir), "--config", "tiny", *QUIET, *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_clear_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.parametrize("args, fragments", [
    (["--set", "mesh.data=3"], ["= 3 devices, but 4 are available"]),
    (["--set", "mesh.tensor=3"], ["do not divide the 4 devices"]),
    (["--set", "mesh.data=1", "--set", "mesh.tensor=4", "--set", "model.n_heads=2", "--set", "model.d_model=64"],
     ["model.n_heads=2 is not divisible by the tensor axis (4)"]),
    (["--set", "model.widht=3"], ["unknown config key `model.widht`"]),
    (["--set", "steps=many"], ["`steps=many` is not a valid int"]),
    (["--config", "huge"], ["unknown config `huge`"]),
    (["--set", "mesh.plan=manual", "--set", "global_batch=6"], ["data-parallel devices"]),
    (["--set", "data.source=c4", "--set", "data.tfds_data_dir=/nonexistent/tfds"], ["c4/en", "tfds build"]),
    (["--set", "data.source=files", "--set", "data.paths=/nonexistent/corpus.txt"], ["/nonexistent/corpus.txt"]),
    (["--set", "model.compute_dtype=bf16"], ["model.compute_dtype must be float32 or bfloat16"]),
    (["--set", "model.n_heads=0"], ["model.n_heads must be at least 1"]),
])
def test_bad_input_gets_one_clear_sentence(tmp_path, args, fragments):
    assert_one_clear_error(pretrain(tmp_path, "--steps", "2", *args), *fragments)


def test_workdir_that_cannot_be_created_is_one_sentence(tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.pretrain", "--workdir", str(tmp_path / "a_file" / "run"), "--config", "tiny",
         "--steps", "1", *QUIET],
        cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=240)
    assert_one_clear_error(proc, "cannot create --workdir")


def _corrupt(step_dir, how: str) -> None:
    """Damage a saved checkpoint: its OCDBT manifests, or the array data files (garbage or cut short)."""
    files = [f for f in (step_dir / "state").rglob("*") if f.is_file() and f.stat().st_size > 0]
    manifests = [f for f in files if "manifest" in f.name]
    data = [f for f in files if f.parent.name == "d"]  # OCDBT's data files hold the array bytes
    assert manifests and data, sorted(str(f) for f in files)
    for f in manifests if how == "manifest" else data:
        if how == "truncated":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        else:
            f.write_bytes(b"garbage" * 16)


@pytest.mark.parametrize("how", ["manifest", "data", "truncated"])
def test_corrupt_checkpoint_is_reported_not_overwritten(tmp_path, how):
    assert pretrain(tmp_path, "--steps", "4", "--stop-after", "2").returncode == 0
    step_dir = tmp_path / "checkpoints" / "2"
    _corrupt(step_dir, how)
    damaged = {str(p): p.read_bytes() for p in step_dir.rglob("*") if p.is_file()}
    proc = pretrain(tmp_path, "--steps", "4")
    assert_one_clear_error(proc, "step 2", "cannot be restored")
    assert {str(p): p.read_bytes() for p in step_dir.rglob("*") if p.is_file()} == damaged  # nothing rewritten


@pytest.mark.slow
def test_sigterm_saves_a_usable_checkpoint(tmp_path):
    proc = pretrain(tmp_path, "--steps", "400", wait=False)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and (not metrics.exists() or len(read_metrics(metrics)) < 3):
        time.sleep(0.2)
    assert metrics.exists(), proc.communicate(timeout=30)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    events = read_jsonl(tmp_path / "events.jsonl")
    preempted = [e for e in events if e["kind"] == "preempted"]
    assert preempted and preempted[0]["signal"] == "SIGTERM"
    stopped_at = preempted[0]["step"]
    assert 3 <= stopped_at < 400
    assert (tmp_path / "checkpoints" / str(stopped_at)).is_dir()
    # The checkpoint is usable: a resumed run continues from exactly that step.
    resumed = pretrain(tmp_path, "--steps", "400", "--stop-after", str(stopped_at + 2))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    resume = [e for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == "resume"]
    assert resume[-1]["step"] == stopped_at
    assert [r["step"] for r in read_metrics(metrics)] == list(range(1, stopped_at + 3))
