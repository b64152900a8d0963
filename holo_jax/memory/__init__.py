"""Memory: named remat policies (and, later, a planner that fits a memory budget)."""
from holo_jax.memory.remat import REMAT_POLICIES, remat_policy

__all__ = ["REMAT_POLICIES", "remat_policy"]
