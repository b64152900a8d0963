"""FLOPs of a compiled XLA program with loop bodies counted once per iteration.

`Compiled.cost_analysis()["flops"]` counts the body of every `while` loop once, whatever its
trip count. The train step has two such loops — the scanned layer stack and the microbatch
accumulation — so its figure is off by roughly `n_layers` (and again by `microbatches`), and
the recompute a remat policy adds inside the layer loop is understated by the same factor.
This module recounts from the optimised HLO text (`Compiled.as_text()`), with every
computation weighted by how often it runs (`holo_jax.hlo.walk`: loop bodies times their
`known_trip_count`, conditional branches as an upper bound). It follows HloCostAnalysis's
conventions — 2 FLOPs per multiply-add in dots (and in cuBLAS GEMM custom calls on GPUs), one
per element of arithmetic elementwise ops and of reduction inputs, none for data movement or
transcendentals — so on a loop-free program the two counts agree (see tests/hlo). Not counted:
convolutions (the model has none) and other custom calls such as cuDNN fused attention, whose
FLOPs the HLO does not state.
"""
from __future__ import annotations

import math
import re

from holo_jax.hlo.walk import HloTextError, Instruction, executions, parse

# One FLOP per output element, as HloCostAnalysis counts them. Transcendentals (exp, log, tanh,
# rsqrt, ...) are counted separately there, and so not here; data movement counts nothing.
_ELEMENTWISE = frozenset({
    "abs", "add", "and", "atan2", "ceil", "clamp", "compare", "convert", "divide", "floor", "is-finite",
    "maximum", "minimum", "multiply", "negate", "not", "or", "remainder", "round-nearest-afz",
    "round-nearest-even", "select", "shift-left", "shift-right-arithmetic", "shift-right-logical",
    "sign", "subtract", "xor", "popcnt", "clz",
})

_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")
_DIMS = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")
# GPU: XLA rewrites dots into cuBLAS custom calls whose backend config keeps the dimension numbers.
_GEMM_DIMS = re.compile(r'"lhs_contracting_dimensions":\[([^\]]*)\]')


class HloFlopsError(HloTextError):
    """The HLO text has FLOPs under a loop without a known trip count, or cannot be read."""


def _dims(shape: str) -> list[int]:
    m = _ARRAY.match(shape)
    return [int(d) for d in m.group(2).split(",") if d] if m else []


def _elements(shape: str) -> int:
    """Element count of an array shape like `f32[8,256]{1,0}` (0 for tuples and tokens)."""
    return math.prod(_dims(shape)) if _ARRAY.match(shape) else 0


def _matmul_flops(out_shape: str, lhs_shape: str, contracting: str) -> float:
    """2 x output elements x contracted size: one multiply and one add per term."""
    lhs = _dims(lhs_shape)
    size = math.prod(lhs[int(d.strip().strip('"'))] for d in contracting.split(",") if d.strip())
    return 2.0 * _elements(out_shape) * size


def _instruction_flops(inst: Instruction, shapes: dict[str, str]) -> float:
    """FLOPs of one execution of `inst` itself (computations it calls are counted where they are)."""
    if inst.opcode == "dot":
        return _matmul_flops(inst.shape, shapes[inst.operands[0]], _DIMS.search(inst.attributes).group(1))
    gemm = _GEMM_DIMS.search(inst.attributes) if inst.opcode == "custom-call" else None
    if gemm and '"__cublas$' in inst.attributes:
        result = _ARRAY.search(inst.shape).group(0)  # cuBLAS returns a (result, workspace) tuple
        return _matmul_flops(result, shapes[inst.operands[0]], gemm.group(1))
    if inst.opcode in _ELEMENTWISE:
        return float(_elements(inst.shape))
    if inst.opcode == "reduce":  # operands are (inputs..., init values...)
        return float(sum(_elements(shapes[o]) for o in inst.operands[: len(inst.operands) // 2]))
    return 0.0


def hlo_flops(hlo_text: str) -> float:
    """Total FLOPs of one execution of the module, each computation times its runs."""
    try:
        module = parse(hlo_text)
    except HloTextError as e:
        raise HloFlopsError(str(e)) from e
    total = 0.0
    for computation, runs in executions(module):
        shapes = {inst.name: inst.shape for inst in computation.instructions}
        for inst in computation.instructions:
            flops = _instruction_flops(inst, shapes)
            if flops and runs is None:
                raise HloFlopsError(f"`{inst.name}` runs in a while loop with no known trip count, "
                                    "so its FLOPs are unknown")
            total += flops * (runs or 0)
    return total
