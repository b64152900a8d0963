"""Bytes on the wire of the collectives in a compiled XLA program, attributed to mesh axes.

    text = jax.jit(step).lower(*args).compile().as_text()
    found = collectives(text, mesh)        # [Collective(op, dtypes, axes, wire_bytes, ...)]
    total = wire_bytes(found, {"data"})    # bytes one device sends per call across `data`

Read after SPMD partitioning, so it counts what the compiler emits — the reductions it inserts
for automatic sharding included — rather than what the program asked for.

`wire_bytes` of one collective over groups of G devices is what one device sends with a
bandwidth-optimal algorithm (the accounting behind NCCL's "bus bandwidth"):

    all-reduce          2 (G-1)/G x size     (ring reduce-scatter + all-gather)
    all-gather          (G-1)/G x result
    reduce-scatter      (G-1)   x result
    all-to-all          (G-1)/G x size
    collective-permute  size, if the device sends to another device

A collective inside a loop body (a scanned layer stack's backward pass reduces each layer's
gradients in the loop) runs once per iteration: `count` is how often its computation runs
(`holo_jax.hlo.walk`: loop bodies times their `known_trip_count`, conditional branches as an
upper bound), and a collective under a loop of unknown trip count is refused.

Replica groups come in the three forms XLA prints: explicit `{{0,1},{2,3}}`, iota
`[4,2]<=[2,4]T(1,0)` and named `mesh['axis_0'=2,'axis_1'=4], device_ids=(...) {'axis_0'}`.
Group members are partition ids; partition p is `mesh.devices.flat[p]`, the device assignment
`jit` derives from shardings on `mesh`. Only the synchronous forms are parsed (what the CPU
backend emits); asynchronous `-start` forms other than all-reduce's are refused, not miscounted.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterable

import numpy as np
from jax.sharding import AbstractMesh, Mesh

from holo_jax.hlo.walk import executions, parse

_OPS = ("all-reduce", "all-gather", "all-to-all", "reduce-scatter", "collective-permute")
_SHAPE = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_EXPLICIT = re.compile(r"replica_groups=\{((?:\{[\d,]*\},?)*)\}")
_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?")
_NAMED = re.compile(r"replica_groups=mesh\[([^\]]*)\](?:, device_ids=\(\[([\d,]+)\](?:T\(([\d,]+)\))?\))? \{([^}]*)\}")
_PAIRS = re.compile(r"source_target_pairs=\{((?:\{\d+,\d+\},?)*)\}")


@dataclasses.dataclass(frozen=True)
class Collective:
    op: str  # one of _OPS
    result_bytes: tuple[tuple[str, int], ...]  # (element type, bytes) per result array on one device
    group_size: int
    axes: frozenset[str]  # mesh axes along which members of a group differ
    wire_bytes: float  # bytes one device sends per execution (see module docstring)
    count: int  # executions per run of the program (loop trip counts multiplied in)

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(dt for dt, _ in self.result_bytes)

    def wire_bytes_by_dtype(self) -> dict[str, float]:
        """`wire_bytes` split over the result's element types (the combiner passes may merge,
        say, int8 payloads and float32 scales into one tuple-shaped collective)."""
        total = sum(b for _, b in self.result_bytes)
        split: dict[str, float] = {}
        for dt, b in self.result_bytes:
            split[dt] = split.get(dt, 0.0) + (self.wire_bytes * b / total if total else 0.0)
        return split


def _iota(dims: str, perm: str | None) -> np.ndarray:
    shape = [int(d) for d in dims.split(",")]
    ids = np.arange(math.prod(shape)).reshape(shape)
    return ids.transpose([int(p) for p in perm.split(",")]) if perm else ids


def _replica_groups(attrs: str, num_devices: int) -> list[list[int]]:
    if m := _IOTA.search(attrs):
        return _iota(m.group(3), m.group(4)).reshape(int(m.group(1)), int(m.group(2))).tolist()
    if m := _NAMED.search(attrs):
        named = [part.split("=") for part in m.group(1).split(",")]
        names = [n.strip("'") for n, _ in named]
        sizes = [int(s) for _, s in named]
        grouped = [a.strip().strip("'") for a in m.group(4).split(",")]
        if any(a not in names for a in grouped):
            raise ValueError(f"unrecognised replica group axes {m.group(4)!r} (sub-axes are not supported)")
        ids = (_iota(m.group(2), m.group(3)) if m.group(2) else np.arange(num_devices)).reshape(sizes)
        order = [i for i, n in enumerate(names) if n not in grouped] + [names.index(a) for a in grouped]
        group = math.prod(sizes[names.index(a)] for a in grouped)
        return ids.transpose(order).reshape(-1, group).tolist()
    if m := _EXPLICIT.search(attrs):
        groups = [[int(i) for i in g.split(",") if i] for g in re.findall(r"\{([\d,]*)\}", m.group(1))]
        return groups or [list(range(num_devices))]  # `{}`: one group of every device
    raise ValueError(f"unrecognised replica_groups in {attrs[:200]!r}")


def _axes_spanned(groups: Iterable[Iterable[int]], mesh: Mesh | AbstractMesh) -> frozenset[str]:
    spanned = set()
    for group in groups:
        coords = np.array([np.unravel_index(p, tuple(mesh.shape.values())) for p in group])
        spanned.update(name for i, name in enumerate(mesh.axis_names) if len(set(coords[:, i])) > 1)
    return frozenset(spanned)


def _wire_bytes(op: str, size: int, group: int) -> float:
    if op == "all-reduce":
        return 2.0 * (group - 1) / group * size
    if op in ("all-gather", "all-to-all"):
        return (group - 1) / group * size
    if op == "reduce-scatter":
        return float((group - 1) * size)
    return float(size)  # collective-permute


def collectives(hlo_text: str, mesh: Mesh | AbstractMesh) -> list[Collective]:
    """Every collective in the compiled module `hlo_text` (of a program jitted over `mesh`)."""
    found = []
    for computation, count in executions(parse(hlo_text)):
        for inst in computation.instructions:
            op = inst.opcode.removesuffix("-start")
            if op not in _OPS or count == 0:
                continue
            if count is None:
                raise ValueError(f"a {op} runs inside a loop of unknown trip count; its bytes per step are unknown")
            if inst.opcode != op and op != "all-reduce":
                raise ValueError(f"asynchronous {op}-start is not supported; read wire bytes from a CPU compile")
            result = tuple((dt, _DTYPE_BYTES[dt] * math.prod(int(d) for d in dims.split(",") if d))
                           for dt, dims in _SHAPE.findall(inst.shape))
            size, attrs = sum(b for _, b in result), inst.attributes
            if op == "collective-permute":
                pairs = [tuple(int(i) for i in p.split(","))
                         for p in re.findall(r"\{(\d+,\d+)\}", _PAIRS.search(attrs).group(1))]
                moving = [p for p in pairs if p[0] != p[1]]
                found.append(Collective(op, result, 2, _axes_spanned(moving, mesh), float(size) if moving else 0.0, count))
                continue
            groups = _replica_groups(attrs, mesh.size)
            group = len(groups[0])
            found.append(Collective(op, result, group, _axes_spanned(groups, mesh), _wire_bytes(op, size, group), count))
    return found


def wire_bytes(found: Iterable[Collective], axes: Iterable[str]) -> float:
    """Bytes one device sends per program run in the collectives that cross any of the mesh `axes`."""
    axes = frozenset(axes)
    return sum(c.wire_bytes * c.count for c in found if c.axes & axes)


def wire_bytes_by_dtype(found: Iterable[Collective], axes: Iterable[str]) -> dict[str, float]:
    """`wire_bytes` split by element type."""
    axes = frozenset(axes)
    by_dtype: dict[str, float] = {}
    for c in found:
        if c.axes & axes:
            for dt, b in c.wire_bytes_by_dtype().items():
                by_dtype[dt] = by_dtype.get(dt, 0.0) + b * c.count
    return by_dtype
