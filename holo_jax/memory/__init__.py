"""Memory: a planner that picks the least-recompute remat policy and microbatch count fitting a
per-device budget. The policies themselves are the model's (`holo_jax.model.remat`)."""
from holo_jax.memory.planner import (
    Candidate, CandidateCost, RematPlan, StepCompiler, candidate_policies, choose, decision_table,
    default_budget, microbatch_options, plan_remat, resolve_budget, resolve_remat,
)
from holo_jax.model.remat import AUTO

__all__ = [
    "AUTO", "Candidate", "CandidateCost", "RematPlan", "StepCompiler", "candidate_policies", "choose",
    "decision_table", "default_budget", "microbatch_options", "plan_remat", "resolve_budget", "resolve_remat",
]
