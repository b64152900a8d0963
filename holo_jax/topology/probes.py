"""What every detection probe reports: it ran and found something, or why it could not."""
from __future__ import annotations

import dataclasses


class ProbeUnavailable(Exception):
    """A probe could not run here (no driver, no sysfs tree, no scheduler); the message says why."""


@dataclasses.dataclass(frozen=True)
class Probe:
    name: str  # "nvidia-smi", "nvml", "infiniband sysfs", "jax.devices", "scheduler"
    ok: bool
    detail: str  # what it found, or why it was unavailable
