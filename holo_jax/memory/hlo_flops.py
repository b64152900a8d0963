"""FLOPs of a compiled XLA program with loop bodies counted once per iteration.

`Compiled.cost_analysis()["flops"]` counts the body of every `while` loop once, whatever its
trip count. The train step has two such loops — the scanned layer stack and the microbatch
accumulation — so its figure is off by roughly `n_layers` (and again by `microbatches`), and
the recompute a remat policy adds inside the layer loop is understated by the same factor.
This module recounts from the optimised HLO text (`Compiled.as_text()`), multiplying each loop
body by the `known_trip_count` XLA records in the loop's backend config. It follows
HloCostAnalysis's conventions — 2 FLOPs per multiply-add in dots (and in cuBLAS GEMM custom
calls on GPUs), one per element of arithmetic elementwise ops and of reduction inputs, none for
data movement or transcendentals — so on a loop-free program the two counts agree (see
tests/memory). Not counted: convolutions (the model has none), conditionals, and other custom
calls such as cuDNN fused attention, whose FLOPs the HLO does not state.
"""
from __future__ import annotations

import math
import re
from typing import Iterator

# One FLOP per output element, as HloCostAnalysis counts them. Transcendentals (exp, log, tanh,
# rsqrt, ...) are counted separately there, and so not here; data movement counts nothing.
_ELEMENTWISE = frozenset({
    "abs", "add", "and", "atan2", "ceil", "clamp", "compare", "convert", "divide", "floor", "is-finite",
    "maximum", "minimum", "multiply", "negate", "not", "or", "remainder", "round-nearest-afz",
    "round-nearest-even", "select", "shift-left", "shift-right-arithmetic", "shift-right-logical",
    "sign", "subtract", "xor", "popcnt", "clz",
})

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+)(?: \(.*\) -> .*)? \{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$")
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CALLED = re.compile(r"\b(calls|to_apply|body)=%?([\w.\-]+)")
_DIMS = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")
# GPU: XLA rewrites dots into cuBLAS custom calls whose backend config keeps the dimension numbers.
_GEMM_DIMS = re.compile(r'"lhs_contracting_dimensions":\[([^\]]*)\]')


class HloFlopsError(ValueError):
    """The HLO text has a loop without a known trip count or a shape this parser cannot read."""


def _split_shape(rest: str) -> tuple[str, str]:
    """Split `<shape> <opcode>(...)...` at the end of the (possibly nested tuple) shape."""
    if not rest.startswith("("):
        shape, _, tail = rest.partition(" ")
        return shape, tail
    depth = 0
    for i, ch in enumerate(rest):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return rest[: i + 1], rest[i + 2:]
    raise HloFlopsError(f"unbalanced tuple shape in HLO: {rest[:80]}")


def _elements(shape: str) -> int:
    """Element count of an array shape like `f32[8,256]{1,0}` (0 for tuples and tokens)."""
    m = _ARRAY.match(shape)
    if m is None:
        return 0
    return math.prod(int(d) for d in m.group(2).split(",") if d)


def _dims(shape: str) -> list[int]:
    m = _ARRAY.match(shape)
    return [int(d) for d in m.group(2).split(",") if d] if m else []


def _matmul_flops(out_shape: str, lhs_shape: str, contracting: str) -> float:
    """2 x output elements x contracted size: one multiply and one add per term."""
    lhs = _dims(lhs_shape)
    size = math.prod(lhs[int(d.strip().strip('"'))] for d in contracting.split(",") if d.strip())
    return 2.0 * _elements(out_shape) * size


def _operands(call: str) -> list[str]:
    """Operand names of `opcode(%a, %b), attrs` (only plain names; compiled HLO prints no shapes)."""
    inner = call[call.index("(") + 1:]
    depth, end = 1, 0
    for end, ch in enumerate(inner):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            break
    return [tok.strip().lstrip("%").split(" ")[-1].lstrip("%") for tok in inner[:end].split(",") if tok.strip()]


def _computations(hlo_text: str) -> Iterator[tuple[str, bool, list[str]]]:
    """(name, is_entry, instruction lines) for each computation in the module text."""
    name, entry, body = None, False, []
    for line in hlo_text.splitlines():
        if name is None:
            m = _COMPUTATION.match(line)
            if m:
                name, entry, body = m.group(1), line.startswith("ENTRY"), []
        elif line == "}":
            yield name, entry, body
            name = None
        else:
            body.append(line)


def _instruction_flops(opcode: str, shape: str, call: str, shapes: dict[str, str]) -> float:
    """FLOPs of one instruction itself (not of computations it calls)."""
    if opcode == "dot":
        return _matmul_flops(shape, shapes[_operands(call)[0]], _DIMS.search(call).group(1))
    if opcode == "custom-call" and '"__cublas$' in call and _GEMM_DIMS.search(call):
        result = _ARRAY.search(shape).group(0)  # cuBLAS returns a (result, workspace) tuple
        return _matmul_flops(result, shapes[_operands(call)[0]], _GEMM_DIMS.search(call).group(1))
    if opcode in _ELEMENTWISE:
        return float(_elements(shape))
    if opcode == "reduce":  # operands are (inputs..., init values...)
        operands = _operands(call)
        return float(sum(_elements(shapes[o]) for o in operands[: len(operands) // 2]))
    return 0.0


def _callees(opcode: str, inst: str, call: str) -> list[tuple[str, int]]:
    """Computations an instruction runs, with how many times per execution."""
    if opcode == "while":
        trip = _TRIP_COUNT.search(call)
        if trip is None:
            raise HloFlopsError(f"while loop `{inst}` has no known trip count, so its FLOPs are unknown")
        return [(c, int(trip.group(1))) for kind, c in _CALLED.findall(call) if kind == "body"]
    if opcode in ("fusion", "call"):
        return [(c, 1) for _, c in _CALLED.findall(call)]
    return []


def hlo_flops(hlo_text: str) -> float:
    """Total FLOPs of one execution of the module, loop bodies multiplied by their trip counts."""
    local: dict[str, float] = {}  # FLOPs of each computation's own instructions
    calls: dict[str, list[tuple[str, int]]] = {}  # computation -> [(callee, times per execution)]
    entry = None
    for name, is_entry, lines in _computations(hlo_text):
        entry = name if is_entry else entry
        shapes: dict[str, str] = {}
        local[name], calls[name] = 0.0, []
        for line in lines:
            m = _INSTRUCTION.match(line)
            if m is None:
                continue
            inst, rest = m.groups()
            shape, call = _split_shape(rest)
            shapes[inst] = shape
            opcode = call[: call.find("(")]
            local[name] += _instruction_flops(opcode, shape, call, shapes)
            calls[name] += _callees(opcode, inst, call)
    if entry is None:
        raise HloFlopsError("no ENTRY computation in the HLO text")

    memo: dict[str, float] = {}

    def total(comp: str) -> float:
        if comp not in memo:
            memo[comp] = local[comp] + sum(n * total(c) for c, n in calls[comp])
        return memo[comp]

    return total(entry)
