"""Choose a remat policy and microbatch count that fit a per-device memory budget, before step one.

JAX can say what a step will cost without running it: `jit(...).lower(...).compile()` gives
`memory_analysis()` (argument, output, alias and temp bytes per device) and the optimised HLO,
from which `holo_jax.hlo.hlo_flops` counts the FLOPs per device with loop bodies counted per
iteration. The planner compiles the real train step, as the trainer jits it (its shardings and
donation), for each candidate (policy x microbatch count) and takes the one with the least
recompute that fits. The chosen executable is handed back, so the trainer does not compile the
step a second time. The step comes from a caller-supplied function, so this package depends on
the model's policies and on nothing of the trainer's.

Ranking: fewest FLOPs per step (recompute is what remat costs). Among candidates within 1% of
the fewest, fewer microbatches win (larger matmuls, fewer weight all-gathers), then not
offloading (host transfers are not free), then fewer FLOPs, then lower peak memory.

Search: "none" (no recompute) is compiled first; if it fits, it is the answer after one compile,
the same start-up cost as training without a planner. Otherwise every policy is compiled at the
smallest microbatch count, side by side in threads. A larger count is tried only for policies
that did not fit and would beat the best fitting candidate on FLOPs: a policy's FLOPs do not
fall as the microbatch count grows (accumulation only adds work), so no other candidate at a
larger count can win.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time
from typing import Any, Callable, Sequence

import jax
from jax.sharding import Mesh

from holo_jax.errors import HoloError
from holo_jax.hlo import hlo_flops
from holo_jax.model.remat import AUTO, DEFAULT, OFFLOAD_POLICIES, REMAT_POLICIES, offload_is_measurable, remat_policy

PyTree = Any
MiB = 2**20
# Relative FLOP difference below which two candidates count as equally fast.
FLOPS_TIE = 0.01
# Share of the reported device memory a default budget leaves to the step; the rest absorbs
# allocator fragmentation and buffers the compiled figures do not see (e.g. the input pipeline's).
DEFAULT_BUDGET_FRACTION = 0.9


@dataclasses.dataclass(frozen=True)
class Candidate:
    policy: str
    microbatches: int

    def __str__(self) -> str:
        return f"{self.policy} x{self.microbatches}"


@dataclasses.dataclass(frozen=True)
class CandidateCost:
    """What one compiled candidate needs, per device and per step."""

    candidate: Candidate
    argument_bytes: int  # train state + batch
    output_bytes: int
    alias_bytes: int  # outputs written into donated arguments (the new state)
    temp_bytes: int  # activations, gradients and scratch: what remat changes
    host_bytes: int  # pinned host memory (where offload policies park activations)
    flops: float  # loop bodies counted per iteration, recompute included
    compile_seconds: float

    @property
    def peak_bytes(self) -> int:
        # XLA allocates the temp buffer once for the whole step; arguments stay live throughout and
        # outputs not aliased to donated arguments need their own space. (On CPU the executable's
        # own `peak_memory_in_bytes` reports only the arguments, so it is not used.)
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @property
    def offloads(self) -> bool:
        return self.candidate.policy in OFFLOAD_POLICIES

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.candidate.policy, "microbatches": self.candidate.microbatches,
                "peak_bytes": self.peak_bytes, "argument_bytes": self.argument_bytes,
                "output_bytes": self.output_bytes, "alias_bytes": self.alias_bytes,
                "temp_bytes": self.temp_bytes, "host_bytes": self.host_bytes, "flops": self.flops,
                "compile_seconds": round(self.compile_seconds, 3)}


class StepCompiler:
    """AOT-compiles the train step for a candidate, at most once per candidate.

    `jitted_step_for(candidate)` returns the step built with that policy and microbatch count,
    already wrapped in `jax.jit` exactly as the trainer runs it (in and out shardings, the state
    donated): what it costs depends on those, so the planner must measure the same executable.
    It is lowered here for `(state, example_batch)` under `jax.set_mesh(mesh)`; `state` and the
    batch may hold arrays or ShapeDtypeStructs, as only shapes and dtypes are used. Executables
    are kept, so planning for several budgets, or training with the chosen one, compiles once."""

    def __init__(self, jitted_step_for: Callable[[Candidate], Any], *, mesh: Mesh, state: PyTree,
                 example_batch: dict[str, Any], max_workers: int | None = None):
        self._jitted_step_for = jitted_step_for
        self.mesh = mesh
        self._state = state
        self._batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example_batch.items()}
        self._max_workers = max_workers or os.cpu_count() or 1
        self._done: dict[Candidate, tuple[CandidateCost, jax.stages.Compiled]] = {}

    def _lower(self, c: Candidate) -> jax.stages.Lowered:
        with jax.set_mesh(self.mesh):
            return self._jitted_step_for(c).lower(self._state, self._batch)

    def costs(self, candidates: Sequence[Candidate]) -> list[CandidateCost]:
        """Compile what is not compiled yet and return the costs, in the order asked."""
        todo = [c for c in dict.fromkeys(candidates) if c not in self._done]
        # Tracing is Python and holds the GIL, so lower one by one; XLA compiles without it, so on a
        # many-core host the candidates compile side by side. (On this project's shared 2-core CPU
        # machines threads made no measurable difference; `max_workers=1` compiles in sequence.)
        lowered = [(c, self._lower(c)) for c in todo]
        with concurrent.futures.ThreadPoolExecutor(min(self._max_workers, max(len(todo), 1))) as pool:
            for c, (compiled, seconds) in zip(todo, pool.map(lambda cl: _timed_compile(cl[1]), lowered)):
                self._done[c] = (_cost(c, compiled, seconds), compiled)
        return [self._done[c][0] for c in candidates]

    def compiled(self, c: Candidate) -> jax.stages.Compiled:
        return self._done[c][1]


def _timed_compile(lowered: jax.stages.Lowered) -> tuple[jax.stages.Compiled, float]:
    t0 = time.perf_counter()
    compiled = lowered.compile()
    return compiled, time.perf_counter() - t0


def _cost(c: Candidate, compiled: jax.stages.Compiled, seconds: float) -> CandidateCost:
    m = compiled.memory_analysis()
    host = m.host_argument_size_in_bytes + m.host_output_size_in_bytes - m.host_alias_size_in_bytes
    return CandidateCost(
        candidate=c, argument_bytes=m.argument_size_in_bytes, output_bytes=m.output_size_in_bytes,
        alias_bytes=m.alias_size_in_bytes, temp_bytes=m.temp_size_in_bytes,
        host_bytes=host + m.host_temp_size_in_bytes, flops=hlo_flops(compiled.as_text()), compile_seconds=seconds,
    )


def choose(costs: Sequence[CandidateCost], budget_bytes: int) -> CandidateCost | None:
    """The least-recompute candidate whose peak fits `budget_bytes` (None if none fits)."""
    fitting = [c for c in costs if c.peak_bytes <= budget_bytes]
    if not fitting:
        return None
    least = min(c.flops for c in fitting)
    tied = [c for c in fitting if c.flops <= least * (1 + FLOPS_TIE)]
    return min(tied, key=lambda c: (c.candidate.microbatches, c.offloads, c.flops, c.peak_bytes))


@dataclasses.dataclass(frozen=True)
class RematPlan:
    budget_bytes: int
    costs: tuple[CandidateCost, ...]  # every compiled candidate
    chosen: CandidateCost
    compiled: jax.stages.Compiled  # the chosen train step, ready to call as step(state, batch)
    offload_measurable: bool
    seconds: float  # wall time of planning, compiles included

    def summary(self) -> dict[str, Any]:
        """A JSON-able record of the decision (for events and the audit log)."""
        c = self.chosen
        return {"budget_bytes": self.budget_bytes, "policy": c.candidate.policy,
                "microbatches": c.candidate.microbatches, "peak_bytes": c.peak_bytes, "flops": c.flops,
                "planning_seconds": round(self.seconds, 3),
                "candidates": [x.as_dict() for x in self.costs]}

    def metrics(self) -> dict[str, Any]:
        """The decision as flat metrics fields (one row of metrics.jsonl carries them)."""
        c = self.chosen
        return {"remat_policy": c.candidate.policy, "remat_microbatches": c.candidate.microbatches,
                "remat_peak_bytes": c.peak_bytes, "remat_budget_bytes": self.budget_bytes,
                "remat_candidates": len(self.costs), "remat_planning_seconds": round(self.seconds, 3)}

    def table(self) -> str:
        return decision_table(self.costs, self.budget_bytes, self.chosen, self.offload_measurable)


def decision_table(costs: Sequence[CandidateCost], budget_bytes: int, chosen: CandidateCost | None,
                   offload_measurable: bool) -> str:
    """One row per compiled candidate: per-device MiB, GFLOP, recompute over the cheapest, verdict."""
    base = min(c.flops for c in costs)
    head = (f"remat plan: budget {budget_bytes / MiB:.1f} MiB per device; "
            f"chosen: {chosen.candidate if chosen else 'nothing fits'}")
    cols = (f"{'policy':<22}{'micro':>6}{'peak':>10}{'state+in':>10}{'temp':>10}{'host':>8}{'GFLOP':>10}"
            f"{'+FLOPs':>9}  verdict")
    rows = [head, cols]
    for c in sorted(costs, key=lambda c: (c.candidate.microbatches, c.flops)):
        verdict = "chosen" if c is chosen else ("fits" if c.peak_bytes <= budget_bytes else "too big")
        if c.offloads and not offload_measurable:
            verdict += " (offload saving needs a GPU to measure)"
        rows.append(f"{c.candidate.policy:<22}{c.candidate.microbatches:>6}{c.peak_bytes / MiB:>10.1f}"
                    f"{c.argument_bytes / MiB:>10.1f}{c.temp_bytes / MiB:>10.1f}{c.host_bytes / MiB:>8.1f}"
                    f"{c.flops / 1e9:>10.2f}{(c.flops / base - 1) * 100:>8.1f}%  {verdict}")
    return "\n".join(rows)


def _nothing_fits(costs: Sequence[CandidateCost], budget_bytes: int) -> str:
    smallest = min(costs, key=lambda c: c.peak_bytes)
    fix = (f"the train state and batch alone take {smallest.argument_bytes / MiB:.1f} MiB, so shard it over "
           f"more fsdp devices" if smallest.argument_bytes > budget_bytes else
           f"raise memory.budget_bytes to at least {smallest.peak_bytes}, or cut activations "
           f"(more data-parallel devices, more microbatches, a shorter sequence)")
    return (f"no remat candidate fits the {budget_bytes / MiB:.1f} MiB per-device budget: the smallest "
            f"footprint found is {smallest.candidate} at {smallest.peak_bytes / MiB:.1f} MiB per device; "
            f"{fix}.")


def plan_remat(compiler: StepCompiler, budget_bytes: int, *, policies: Sequence[str],
               microbatches: Sequence[int], report: Callable[[str], None] | None = None) -> RematPlan:
    """Compile candidates as the module docstring describes and return the chosen one.

    `report` receives the decision table (e.g. `print`). Raises HoloError in one sentence if no
    candidate fits, naming the smallest footprint found."""
    unknown = [p for p in policies if p not in REMAT_POLICIES]
    if unknown:
        raise HoloError(f"unknown remat policies in memory.policies: {', '.join(unknown)}; "
                        f"choose from: {', '.join(REMAT_POLICIES)}.")
    if not policies or not microbatches:
        raise HoloError("remat planning needs at least one policy and one microbatch count.")
    t0 = time.perf_counter()
    costs: list[CandidateCost] = []
    remaining = list(policies)
    for m in sorted(set(microbatches)):
        # "none" recomputes nothing: if it fits, no candidate at this or a larger count can beat it,
        # so it goes first and alone (a generous budget then costs one compile, as without planning).
        if "none" in remaining:
            (none,) = compiler.costs([Candidate("none", m)])
            if none.peak_bytes <= budget_bytes:
                costs.append(none)
                break
        round_costs = compiler.costs([Candidate(p, m) for p in remaining])
        costs += round_costs
        best = choose(costs, budget_bytes)
        remaining = [c.candidate.policy for c in round_costs if c.peak_bytes > budget_bytes
                     and (best is None or c.flops * (1 + FLOPS_TIE) < best.flops)]
        if not remaining:
            break
    best = choose(costs, budget_bytes)
    measurable = offload_is_measurable(compiler.mesh.devices.flat)
    if report is not None:
        report(decision_table(costs, budget_bytes, best, measurable))
    if best is None:
        raise HoloError(_nothing_fits(costs, budget_bytes))
    return RematPlan(budget_bytes, tuple(costs), best, compiler.compiled(best.candidate), measurable,
                     time.perf_counter() - t0)


def default_budget(devices: Sequence[jax.Device], fraction: float = DEFAULT_BUDGET_FRACTION) -> int | None:
    """`fraction` of the smallest memory limit the devices report, or None if they report none."""
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
    return int(fraction * min(limits)) if limits and all(limits) else None


def resolve_budget(budget_bytes: int, devices: Sequence[jax.Device]) -> int:
    """An explicit budget (> 0), else the devices' default; one clear error if neither exists."""
    if budget_bytes > 0:
        return budget_bytes
    budget = default_budget(devices)
    if budget is None:
        raise HoloError(
            f"remat=auto needs a per-device memory budget and {devices[0].platform} devices do not report "
            "their memory; set one (e.g. --set memory.budget_bytes=2000000000) or name a policy with "
            "model.remat=<policy>."
        )
    return budget


def resolve_remat(requested: str, budget_bytes: int, devices: Sequence[jax.Device]) -> tuple[str, int | None]:
    """What `model.remat=requested` runs as: ("auto", budget) or (a policy name, None).

    The default plans where a budget is known (an explicit one, or devices that report their
    memory, as GPUs and TPUs do) and is "none" elsewhere, so a CPU run needs no setting; an
    explicit "auto" without a budget is one clear error (`resolve_budget`)."""
    if requested == DEFAULT:
        budget = budget_bytes if budget_bytes > 0 else default_budget(devices)
        return (AUTO, budget) if budget is not None else ("none", None)
    if requested == AUTO:
        return AUTO, resolve_budget(budget_bytes, devices)
    remat_policy(requested)  # an unknown name fails here, before the mesh and the data are set up
    return requested, None


def candidate_policies(requested: Sequence[str], devices: Sequence[jax.Device]) -> tuple[str, ...]:
    """`requested`, or every registered policy, leaving out offload ones where they save nothing."""
    if requested:
        return tuple(requested)
    measurable = offload_is_measurable(devices)
    return tuple(p for p in REMAT_POLICIES if measurable or p not in OFFLOAD_POLICIES)


def microbatch_options(global_batch: int, data_parallel: int, start: int, limit: int) -> tuple[int, ...]:
    """`start`, doubled while each microbatch still splits evenly over the data-parallel devices."""
    options, m = [], start
    while m <= max(limit, start) and global_batch % m == 0 and (global_batch // m) % data_parallel == 0:
        options.append(m)
        m *= 2
    return tuple(options)
