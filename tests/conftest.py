"""Test setup: 8 simulated CPU devices, set before anything imports jax."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (for TFDS) is chatty on import.

import jax  # noqa: E402  (must follow the environment set-up above)
import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s; still run in CI")


def pytest_collection_modifyitems(session, config, items):
    """Files with a slow test run first. pytest-xdist (`-n 2 --dist loadfile`, pyproject.toml) hands
    whole files to its workers in collection order; dealing the long ones out first and the many
    short ones last keeps one worker from running a long file alone at the end (longest first).
    The sort is stable, so each file's tests keep their order."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture
def require_devices():
    """Skip a test cleanly when it needs more devices than this machine simulates."""

    def need(n: int):
        if jax.device_count() < n:
            pytest.skip(f"needs {n} devices, have {jax.device_count()}")

    return need
