"""Choose the (data, fsdp, tensor) mesh and device order for a topology and a GPT workload.

Every factorisation of the devices into data x fsdp x tensor is tried, each axis split into a
within-host and an across-host part, with two device orders per host (device-id order, and an
NVLink path that walks each island along its strongest links). Each candidate gets a predicted
step time (compute plus the alpha-beta cost of its collectives, run one after another unless
`CostParams.overlap_grad_comm` hides the data axis's gradient reduction under the backward
pass) and a memory estimate; infeasible ones (memory, divisibility) are dropped and the fastest survivor wins.
Each candidate also gets the gradient-communication scheme (`grad_comm.scheme` of the trainer)
that makes it fastest among the ones the caller allows (`Workload.grad_comm`): the exact fp32
all-reduce, or holo_jax's two-phase bf16/int8/int4 all-reduce with error feedback over the
`data` axis, priced by its real wire format (holo_jax.topology.grad_wire).
Candidates whose tensor groups stay inside one NVLink island rank ahead of those that do not:
tensor parallelism puts several all-reduces on the critical path of every layer, so it is the
axis that must get the fastest links.

`MeshPlan.device_order` indexes `holo_jax.parallel.mesh.order_devices(jax.devices())`, and
`np.asarray(devices)[plan.device_order].reshape(data, fsdp, tensor)` is the mesh.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from holo_jax.config import ModelConfig
from holo_jax.errors import HoloError
from holo_jax.topology import grad_wire as gw
from holo_jax.topology import workload as wl
from holo_jax.topology.cost import (
    GroupLink, LinkModel, all_gather_s, all_reduce_s, reduce_scatter_s, two_phase_s,
)
from holo_jax.topology.model import Topology

AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class CostParams:
    # Fraction of peak FLOP/s the step's matmuls reach. 0.44 reproduces the 137 TFLOP/s per A100
    # of Narayanan et al. 2021, Table 1, first row (1.7B GPT, 32 GPUs, pure data parallel, where
    # communication is a few percent); the other rows check it (see holo_jax.topology.published).
    compute_efficiency: float = 0.44
    # JAX preallocates 75% of GPU memory for its allocator by default
    # (XLA_PYTHON_CLIENT_MEM_FRACTION); that is the budget a plan must fit.
    memory_fraction: float = 0.75
    # Hide the data axis's gradient reduction under the backward pass, as PyTorch DDP's buckets
    # do: each layer's gradients are reduced while earlier layers' backward runs, so only what
    # outlasts the last microbatch's backward (and at least the last bucket, the embeddings')
    # stays on the step. Off by default: holo_jax reduces the gradient tree after the backward
    # pass, as Megatron-LM did in the runs of the calibration table (its --overlap-grad-reduce
    # came later). Codec passes stay exposed either way (they compete with the backward for HBM
    # bandwidth).
    overlap_grad_comm: bool = False


@dataclasses.dataclass(frozen=True)
class Workload:
    model: ModelConfig
    global_batch: int
    seq_len: int
    microbatches: int = 1
    # Gradients are reduced in float32, the dtype of holo_jax's master weights.
    grad_bytes: int = wl.F32
    # Gradient-communication schemes over the data axis the planner may choose from
    # (grad_wire.SCHEMES). Only fp32 unless the caller opts in: a run prices what it configured.
    grad_comm: tuple[str, ...] = ("fp32",)

    def __post_init__(self) -> None:
        if self.model.remat == "default":
            # The trainer resolves "default" (auto where a memory budget is known) before it plans
            # the mesh; a bare config here has no budget, which the trainer would run as "none".
            object.__setattr__(self, "model", dataclasses.replace(self.model, remat="none"))
        if self.global_batch < 1:
            raise HoloError(f"the global batch must be at least 1, got {self.global_batch}.")
        if self.microbatches < 1:
            raise HoloError(f"microbatches must be at least 1, got {self.microbatches}.")
        object.__setattr__(self, "grad_comm", gw.check_schemes(self.grad_comm))

    @property
    def tensor_all_reduces_per_layer(self) -> int:
        # Megatron-style tensor parallelism: attention and MLP outputs are all-reduced in the
        # forward pass, their input gradients in the backward pass, and again in a recomputed forward.
        return 4 if self.model.remat == "none" else 6


@dataclasses.dataclass(frozen=True)
class StepEstimate:
    compute_s: float | None  # None: the device's peak FLOP/s for this dtype is unknown
    comm_s: dict[str, float]  # per mesh axis, its slowest group
    comm_link: dict[str, str]  # per mesh axis: "nvlink", "pcie", "network" or "none"
    memory: wl.Memory
    memory_budget_bytes: float | None
    # Extra time of a quantized scheme besides its wire time (which is in comm_s["data"]):
    # "encode_decode" on the GPU, the float32 "island_reduce_scatter" / "island_all_gather" of a
    # hierarchical reduction. Empty for fp32.
    grad_comm_s: dict[str, float] = dataclasses.field(default_factory=dict)
    # Seconds of the data axis's reduction hidden under the backward pass (0 unless
    # CostParams.overlap_grad_comm).
    hidden_s: float = 0.0

    @property
    def step_s(self) -> float:
        # Compute, every collective and the codec run one after another, less what is hidden.
        return ((self.compute_s or 0.0) + sum(self.comm_s.values()) + sum(self.grad_comm_s.values())
                - self.hidden_s)


@dataclasses.dataclass(frozen=True)
class MeshPlan:
    axis_sizes: dict[str, int]  # keys exactly "data", "fsdp", "tensor"
    device_order: list[int]
    # Each axis size = within_host x across_hosts; None for orders that are not such a split.
    within_host: dict[str, int] | None
    across_hosts: dict[str, int] | None
    order: str  # how the order was made, e.g. "NVLink path" or "device id"
    estimate: StepEstimate
    tensor_in_island: bool  # every tensor group lies inside one NVLink island
    problems: tuple[str, ...] = ()  # "<kind>: <why the plan cannot run>"; empty when feasible
    why: str = ""
    grad_comm: str = "fp32"  # gradient-communication scheme over the data axis (grad_comm.scheme)
    # Predicted step seconds of this mesh under each scheme tried; None where that scheme does not fit.
    scheme_step_s: dict[str, float | None] = dataclasses.field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return not self.problems

    @property
    def mesh_shape(self) -> tuple[int, int, int]:
        return tuple(self.axis_sizes[a] for a in AXES)  # type: ignore[return-value]

    def label(self) -> str:
        return " x ".join(f"{a}={self.axis_sizes[a]}" for a in AXES)

    def to_dict(self) -> dict[str, Any]:
        est = self.estimate
        return {
            "axis_sizes": self.axis_sizes,
            "device_order": self.device_order,
            "within_host": self.within_host,
            "across_hosts": self.across_hosts,
            "order": self.order,
            "tensor_in_island": self.tensor_in_island,
            "feasible": self.feasible,
            "problems": list(self.problems),
            "grad_comm": self.grad_comm,
            "scheme_step_seconds": self.scheme_step_s,
            "predicted_step_seconds": est.step_s,
            "predicted_compute_seconds": est.compute_s,
            "predicted_comm_seconds": est.comm_s,
            "comm_link": est.comm_link,
            "predicted_grad_comm_seconds": est.grad_comm_s,
            "predicted_hidden_grad_comm_seconds": est.hidden_s,
            "memory_bytes": {**dataclasses.asdict(est.memory), "total": est.memory.total},
            "memory_budget_bytes": est.memory_budget_bytes,
            "why": self.why,
        }


def plan(
    topology: Topology,
    model: ModelConfig,
    global_batch: int,
    seq_len: int | None = None,
    *,
    microbatches: int = 1,
    params: CostParams = CostParams(),
    grad_comm: tuple[str, ...] = ("fp32",),
) -> MeshPlan:
    """The fastest feasible plan, with `why` explaining the choice. `grad_comm`: the gradient
    schemes it may pick from (grad_wire.SCHEMES); the choice is `MeshPlan.grad_comm`."""
    work = Workload(model, global_batch, seq_len or model.max_len, microbatches, grad_comm=tuple(grad_comm))
    ranked = candidates(topology, work, params)
    if not ranked[0].feasible:
        raise HoloError(nothing_fits(ranked, topology))
    return dataclasses.replace(ranked[0], why=explain(ranked))


def candidates(topology: Topology, work: Workload, params: CostParams = CostParams()) -> list[MeshPlan]:
    """Every split of the devices, each with its better device order; best first."""
    links = LinkModel(topology)
    per_host = {len(p) for p in links.host_positions}
    if len(per_host) != 1:
        raise HoloError(f"{topology.source}: hosts have different GPU counts ({sorted(per_host)}); plan them separately.")
    (gpus_per_host,) = per_host
    orders = host_orders(topology)
    found = []
    for within in _factorisations(gpus_per_host):
        for across in _factorisations(len(topology.hosts)):
            options = [
                evaluate(topology, work, within, across, name, orders[name], params, links) for name in orders
            ]
            found.append(min(options, key=lambda p: p.estimate.step_s))
    return sorted(found, key=_rank)


def evaluate(
    topology: Topology,
    work: Workload,
    within: dict[str, int],
    across: dict[str, int],
    order_name: str,
    host_order: list[list[int]],
    params: CostParams = CostParams(),
    links: LinkModel | None = None,
) -> MeshPlan:
    """Predict one plan: axis sizes split `within` x `across` hosts, hosts' GPUs in `host_order`."""
    sizes = {a: within[a] * across[a] for a in AXES}
    order = device_order(within, across, host_order)
    return dataclasses.replace(evaluate_order(topology, work, sizes, order, order_name, params, links),
                               within_host=dict(within), across_hosts=dict(across))


def evaluate_order(
    topology: Topology,
    work: Workload,
    sizes: dict[str, int],
    order: np.ndarray,
    order_name: str,
    params: CostParams = CostParams(),
    links: LinkModel | None = None,
) -> MeshPlan:
    """Predict the mesh `np.asarray(devices)[order].reshape(data, fsdp, tensor)` for any order."""
    links = links or LinkModel(topology)
    order = np.asarray(order)
    if sorted(order.tolist()) != list(range(len(topology.gpus))):
        raise HoloError(f"a device order must be a permutation of 0..{len(topology.gpus) - 1}.")
    if int(np.prod([sizes[a] for a in AXES])) != len(order):
        raise HoloError(f"mesh {sizes} does not have {len(order)} devices.")
    dev = topology.device
    budget = dev.memory_bytes * params.memory_fraction if dev.memory_bytes else None
    peak = dev.peak_flops.get(work.model.compute_dtype)
    compute = (
        wl.step_flops(work.model, work.global_batch, work.seq_len) / len(order) / (peak * params.compute_efficiency)
        if peak else None
    )
    tensor_groups = np.asarray(order).reshape(-1, sizes["tensor"])
    in_island = all(len({id(topology.island_of[topology.gpus[p].index]) for p in g}) == 1 for g in tensor_groups)
    comm_s, comm_link, groups = _comm(links, work, sizes, order)
    # With one replica the trainer's reduction is the exact one whatever is configured
    # (grad_comm_plan.make_grad_comm), so only fp32 is priced.
    schemes = work.grad_comm if sizes["data"] > 1 else ("fp32",)
    tried = []
    for scheme in schemes:
        data_s, extra_s, extra_bytes = _grad_comm(links, work, sizes, order.reshape(-1, sizes["fsdp"], sizes["tensor"]),
                                                  groups.get("data", []), scheme, dev.memory_gbyte_s)
        memory = wl.memory_per_device(work.model, work.global_batch, work.seq_len, *(sizes[a] for a in AXES),
                                      work.microbatches)
        memory = dataclasses.replace(memory, grad_comm=extra_bytes)
        hidden = _hidden_grad_comm_s(work, compute, data_s, extra_s) if params.overlap_grad_comm else 0.0
        estimate = StepEstimate(compute, {**comm_s, "data": data_s}, comm_link, memory, budget, extra_s, hidden)
        tried.append((scheme, estimate, tuple(_problems(work, sizes, estimate))))
    # The fastest scheme that fits; on a tie the earlier (fp32 first: exact beats approximate).
    scheme, estimate, problems = min(tried, key=lambda t: (bool(t[2]), t[1].step_s))
    return MeshPlan(
        axis_sizes=dict(sizes),
        device_order=[int(p) for p in order],
        within_host=None,
        across_hosts=None,
        order=order_name,
        estimate=estimate,
        tensor_in_island=in_island,
        problems=problems,
        grad_comm=scheme,
        scheme_step_s={s: (None if p else e.step_s) for s, e, p in tried},
    )


def device_order(within: dict[str, int], across: dict[str, int], host_order: list[list[int]]) -> np.ndarray:
    """Positions in mesh order: each axis index i = i_across * within + i_within, so the inner part
    of every axis stays on one host; hosts and their local slots are both row-major (data, fsdp,
    tensor), which puts consecutive slots in one tensor group."""
    local = np.asarray(host_order)
    d, f, t = (within[a] * across[a] for a in AXES)
    d_in, f_in, t_in = (within[a] for a in AXES)
    f_out, t_out = across["fsdp"], across["tensor"]
    ao, ai = np.divmod(np.arange(d), d_in)
    bo, bi = np.divmod(np.arange(f), f_in)
    co, ci = np.divmod(np.arange(t), t_in)
    host = (ao[:, None, None] * f_out + bo[None, :, None]) * t_out + co[None, None, :]
    slot = (ai[:, None, None] * f_in + bi[None, :, None]) * t_in + ci[None, None, :]
    return local[host, slot].reshape(-1)


def host_orders(topology: Topology) -> dict[str, list[list[int]]]:
    """Per host, its device positions in each candidate local order."""
    by_id, by_path = [], []
    for h in range(len(topology.hosts)):
        gpus = topology.gpus_on(h)
        by_id.append([topology.position[g.index] for g in gpus])
        by_path.append([topology.position[i] for i in _nvlink_path(topology, [g.index for g in gpus])])
    return {"NVLink path": by_path, "device id": by_id}


def _nvlink_path(topology: Topology, indices: list[int]) -> list[int]:
    """Islands in turn (by lowest GPU index); inside one, a greedy walk along the most links, so
    consecutive GPUs (future tensor groups) are the best connected (on a DGX-1 cube mesh the
    pairs it forms are all NV2)."""
    count: dict[tuple[int, int], int] = {}
    for a, b, c in topology.nvlinks:
        count[a, b] = count[b, a] = c
    path: list[int] = []
    for island in sorted({id(topology.island_of[i]): topology.island_of[i] for i in indices}.values(),
                         key=lambda isl: isl.gpus[0]):
        left = sorted(island.gpus)
        current = left.pop(0)
        path.append(current)
        while left:
            current = max(left, key=lambda g: (count.get((current, g), 0), -g))
            left.remove(current)
            path.append(current)
    return path


def _comm(links: LinkModel, work: Workload, sizes: dict[str, int], order: np.ndarray):
    """Per axis: seconds of its collectives under exact fp32 gradients, its link class, and its
    distinct GroupLinks (the `data` ones price the fp32 reduction in `_grad_comm`)."""
    m, model = work.microbatches, work.model
    d, f, t = (sizes[a] for a in AXES)
    params = wl.param_count(model)
    param_bytes, grad_bytes = wl.F32 * params, work.grad_bytes * params
    local_tokens = work.global_batch / (d * f) / m * work.seq_len
    act_bytes = local_tokens * model.d_model * wl.dtype_bytes(model.compute_dtype)
    chunks = model.n_layers + 1  # FSDP gathers layer by layer, plus the embeddings
    cost: dict[str, Callable[[GroupLink], float]] = {
        "tensor": lambda g: m * model.n_layers * work.tensor_all_reduces_per_layer * all_reduce_s(act_bytes, g),
        "fsdp": lambda g: m * chunks * (2 * all_gather_s(param_bytes / t / chunks, g)
                                        + reduce_scatter_s(grad_bytes / t / chunks, g)),
        "data": lambda g: all_reduce_s(grad_bytes / (t * f), g),
    }
    mesh = order.reshape(d, f, t)
    groups = {
        "tensor": mesh.reshape(-1, t),
        "fsdp": np.moveaxis(mesh, 1, 2).reshape(-1, f),
        "data": np.moveaxis(mesh, 0, 2).reshape(-1, d),
    }
    distinct = {name: _priced(links, g) for name, g in groups.items() if g.shape[1] > 1}
    seconds, link_kind = {}, {}
    for axis in AXES:
        if sizes[axis] == 1:
            seconds[axis], link_kind[axis] = 0.0, "none"
            continue
        seconds[axis], link_kind[axis] = max((cost[axis](g), g.kind) for g in distinct[axis])
    return seconds, link_kind, distinct


def _priced(links: LinkModel, rows: np.ndarray) -> list[GroupLink]:
    """The distinct GroupLinks of these groups (rows of device positions)."""
    return [links.group(p, key) for key, p in dict(zip(links.group_keys(rows), rows)).items()]


def _island(host_rows: np.ndarray) -> int:
    """The longest run of consecutive data-axis positions on one host, the same in every group and
    tiling the axis: the float32 island `grad_comm_plan._process_island` reduces first (1: flat)."""
    groups, n = host_rows.shape
    for run in range(n, 1, -1):
        if n % run == 0:
            runs = host_rows.reshape(groups, n // run, run)
            if np.all(runs == runs[:, :, :1]):
                return run
    return 1


def _grad_comm(links: LinkModel, work: Workload, sizes: dict[str, int], mesh: np.ndarray,
               data_links: list[GroupLink], scheme: str, hbm_gbyte_s: float | None
               ) -> tuple[float, dict[str, float], float]:
    """The data axis's gradient reduction under `scheme`: (seconds on the slow wire, other seconds
    by kind, extra bytes per device), following `grad_comm.QuantizedMean`: a float32
    reduce-scatter inside each island of same-host data ranks, the encoded two-phase all-reduce of
    each rank's 1/island share across islands, and a float32 all-gather of the mean inside the
    island; every rank works on its own fsdp x tensor part only (the mean stays sharded like the
    parameters). See holo_jax.topology.grad_wire for what else is counted."""
    d, f, t = (sizes[a] for a in AXES)
    params = wl.param_count(work.model)
    values = params / (f * t)  # this device's part of its replica's gradient bucket
    if d == 1:
        return 0.0, {}, 0.0
    if scheme == "fp32":
        return max(all_reduce_s(work.grad_bytes * values, g) for g in data_links), {}, 0.0
    data_rows = np.moveaxis(mesh, 0, 2).reshape(-1, d)
    island = _island(links.host_of[data_rows])
    across = d // island
    runs = data_rows.reshape(-1, across, island)
    wire, extra = 0.0, {}
    if island > 1:
        islands = _priced(links, runs.reshape(-1, island))
        extra["island_reduce_scatter"] = max(reduce_scatter_s(wl.F32 * values, g) for g in islands)
        extra["island_all_gather"] = max(all_gather_s(wl.F32 * values, g) for g in islands)
    shard = values / island  # what each rank encodes
    if across > 1:
        wire = max(two_phase_s(gw.wire_bytes(shard, scheme), g)
                   for g in _priced(links, np.swapaxes(runs, 1, 2).reshape(-1, across)))
    if hbm_gbyte_s:
        extra["encode_decode"] = gw.codec_hbm_bytes(shard, scheme, across) / (hbm_gbyte_s * 1e9)
    return wire, extra, gw.quantized_memory_bytes(shard, scheme, across, island)


def _hidden_grad_comm_s(work: Workload, compute_s: float | None, data_s: float,
                        extra_s: dict[str, float]) -> float:
    """Seconds of the data-axis reduction (wire plus island collectives, not the codec) that run
    under the backward pass of the last microbatch (earlier microbatches only accumulate)."""
    reduce_s = data_s + extra_s.get("island_reduce_scatter", 0.0) + extra_s.get("island_all_gather", 0.0)
    if not compute_s or not reduce_s:
        return 0.0
    passes = 3 if work.model.remat == "none" else 4  # as workload.step_flops counts them
    backward_s = compute_s * (passes - 1) / passes / work.microbatches
    last_bucket_s = reduce_s / (work.model.n_layers + 1)  # reduced after the backward has ended
    return max(0.0, min(reduce_s - last_bucket_s, backward_s))


def _problems(work: Workload, sizes: dict[str, int], est: StepEstimate):
    model, d, f, t = work.model, sizes["data"], sizes["fsdp"], sizes["tensor"]
    # The same divisibility holo_jax.parallel.mesh.check_model_fits_mesh enforces.
    for name, value, axis, size in (("n_heads", model.n_heads, "tensor", t), ("d_ff", model.d_ff, "tensor", t),
                                    ("padded vocab", model.padded_vocab, "tensor", t),
                                    ("d_model", model.d_model, "fsdp", f)):
        if value % size:
            yield f"model shape: {name}={value} is not divisible by {axis}={size}"
    if work.global_batch % (d * f):
        yield f"batch: global batch {work.global_batch} is not divisible by data*fsdp={d * f}"
    elif (work.global_batch // (d * f)) % work.microbatches:
        yield (f"batch: per-replica batch {work.global_batch // (d * f)} is not divisible by "
               f"{work.microbatches} microbatches")
    if est.memory_budget_bytes is not None and est.memory.total > est.memory_budget_bytes:
        yield (f"memory: needs {est.memory.total / 2**30:.1f} GiB per device, "
               f"budget {est.memory_budget_bytes / 2**30:.1f} GiB")


def _rank(p: MeshPlan) -> tuple:
    return (not p.feasible, not p.tensor_in_island, p.estimate.step_s, p.order != "NVLink path")


def _factorisations(n: int):
    for t in (k for k in range(1, n + 1) if n % k == 0):
        for f in (k for k in range(1, n // t + 1) if (n // t) % k == 0):
            yield {"data": n // t // f, "fsdp": f, "tensor": t}


def describe(p: MeshPlan) -> str:
    est = p.estimate
    comm = ", ".join(f"{a} {est.comm_s[a]:.3g} s over {est.comm_link[a]}" for a in AXES if est.comm_s[a])
    compute = f"compute {est.compute_s:.3g} s" if est.compute_s is not None else "compute not modelled"
    codec = "".join(f", {k.replace('_', '/')} {v:.3g} s" for k, v in est.grad_comm_s.items())
    return (f"{p.label()} ({p.order} order, {p.grad_comm} gradients): {est.step_s:.3g} s/step ({compute}; "
            f"comm {comm or 'none'}{codec}), {est.memory.total / 2**30:.1f} GiB per device")


def explain(ranked: list[MeshPlan]) -> str:
    best, feasible = ranked[0], [p for p in ranked if p.feasible]
    parts = [f"Chose {describe(best)}."]
    t_out = best.across_hosts["tensor"]
    if best.axis_sizes["tensor"] > 1:
        where = "one NVLink island" if best.tensor_in_island else ("one host" if t_out == 1 else f"{t_out} hosts")
        parts.append(f"Each tensor group of {best.axis_sizes['tensor']} GPUs lies in {where}.")
    if not best.tensor_in_island:
        parts.append("No feasible plan keeps the tensor groups inside NVLink islands.")
    hosts_axes = [f"{a} x{best.across_hosts[a]}" for a in AXES if best.across_hosts[a] > 1]
    if hosts_axes:
        parts.append(f"Across hosts: {', '.join(hosts_axes)}.")
    others = {s: t for s, t in best.scheme_step_s.items() if s != best.grad_comm}
    if others:
        alt = ", ".join(f"{s} {t:.3g} s" if t is not None else f"{s} does not fit" for s, t in others.items())
        what = ("exact fp32 all-reduce" if best.grad_comm == "fp32"
                else f"{best.grad_comm} two-phase all-reduce with error feedback")
        parts.append(f"Data-axis gradients: {what}; this mesh with {alt}.")
    other = next((p for p in feasible[1:] if p.axis_sizes != best.axis_sizes), None)
    if other is not None:
        slower = other.estimate.step_s / best.estimate.step_s - 1
        parts.append(f"Next best, {other.label()}, is predicted {slower:.1%} slower.")
    dropped = len(ranked) - len(feasible)
    if dropped:
        reasons: dict[str, int] = {}
        for p in ranked:
            if p.problems:
                kind = p.problems[0].split(":")[0]
                reasons[kind] = reasons.get(kind, 0) + 1
        parts.append(f"{len(feasible)} of {len(ranked)} candidates are feasible; dropped: "
                     + ", ".join(f"{n} for {k}" for k, n in sorted(reasons.items())) + ".")
    return " ".join(parts)


def nothing_fits(ranked: list[MeshPlan], topology: Topology) -> str:
    """One sentence for when no candidate is feasible: the closest one and why it fails."""
    closest = min(ranked, key=lambda p: (len(p.problems), p.estimate.memory.total))
    return (f"no data x fsdp x tensor split of the {len(topology.gpus)} devices can run this model: the closest, "
            f"{closest.label()}, fails because {closest.problems[0]}; use more devices, a smaller model or batch, "
            f"microbatches, or remat=full.")

