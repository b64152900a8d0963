"""The planner sits below the trainer: importing it loads nothing of `holo_jax.train`, and the
model it plans for does not load the planner (the remat policies are the model's own)."""
import json
import subprocess
import sys


def _loaded_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('holo_jax'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_memory_loads_no_trainer_and_model_loads_no_planner():
    memory = _loaded_after_import("holo_jax.memory")
    assert "holo_jax.memory.planner" in memory and "holo_jax.model.remat" in memory
    assert not {m for m in memory if m.startswith("holo_jax.train")}
    model = _loaded_after_import("holo_jax.model")
    assert "holo_jax.model.remat" in model and not {m for m in model if m.startswith("holo_jax.memory")}
