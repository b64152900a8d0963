"""Memory: named remat policies and a planner that picks the least-recompute one fitting a budget."""
from holo_jax.memory.hlo_flops import HloFlopsError, hlo_flops
from holo_jax.memory.planner import (
    Candidate, CandidateCost, RematPlan, StepCompiler, candidate_policies, choose, decision_table,
    default_budget, microbatch_options, plan_remat, resolve_budget, resolve_remat,
)
from holo_jax.memory.remat import AUTO, DEFAULT, OFFLOAD_POLICIES, REMAT_POLICIES, offload_is_measurable, remat_policy

__all__ = [
    "AUTO", "DEFAULT", "Candidate", "CandidateCost", "HloFlopsError", "OFFLOAD_POLICIES", "REMAT_POLICIES", "RematPlan",
    "StepCompiler", "candidate_policies", "choose", "decision_table", "default_budget", "hlo_flops",
    "microbatch_options", "offload_is_measurable", "plan_remat", "remat_policy", "resolve_budget",
    "resolve_remat",
]
