"""What a data-parallel gradient reduction costs under each `grad_comm.scheme` of the trainer.

`fp32` is the compiler's exact all-reduce (hierarchical NCCL rings, priced by `cost.all_reduce_s`
at the workload's gradient width). `bf16`, `int8` and `int4` are holo_jax's two-phase all-reduce
(`holo_jax.parallel.collectives.two_phase_pmean` through `grad_comm.QuantizedMean`) over the
`data` mesh axis, always with error feedback here: hierarchical where the data axis holds several
devices of each host (a float32 reduce-scatter inside that island, the encoded exchange of each
device's 1/island share across hosts, a float32 all-gather inside the island), flat otherwise.
Its costs, as the code runs today:

- wire: every value travels as `PAYLOAD_BITS` bits, and int8/int4 add one float32 scale per block
  of `block_size` values (`quantize.Codec.encode`); tests check `wire_bytes` against the real
  encoder's output shapes;
- GPU time: encoding and decoding are elementwise passes over HBM (`codec_hbm_bytes`), priced at
  the device's peak memory bandwidth, so this is a lower bound on that time;
- memory: the error-feedback residuals (float32, the values the device encodes plus its owned
  chunk), the encoded send/receive buffers, and one float32 copy of the device's part of its
  replica's bucket — its own shards of the gradient leaves, packed (4 bytes x params /
  (fsdp x tensor)). `QuantizedMean` takes and returns every leaf in its parameter's own
  fsdp/tensor sharding, so no device holds more of the float32 gradient than its share and nothing
  is gathered over `fsdp`/`tensor` (only leaves replicated over one of them — norm scales, biases,
  well under 1% of a GPT's parameters — are split and gathered back; not priced);
- inside an island, the float32 reduce-scatter of the device's part and the all-gather of the
  island's mean back to it (NVLink when the island is a host), priced by `cost.reduce_scatter_s`
  and `cost.all_gather_s`.
Reductions over `fsdp` and `tensor` themselves stay float32 (the compiler's), as in the trainer.
"""
from __future__ import annotations

import math

from holo_jax.config import GradCommConfig
from holo_jax.errors import HoloError

SCHEMES = ("fp32", "bf16", "int8", "int4")
QUANTIZED = SCHEMES[1:]
PAYLOAD_BITS = {"bf16": 16, "int8": 8, "int4": 4}
SCALE_BYTES = 4  # one float32 scale per block (int8, int4); bf16 has none
BLOCK_SIZE = GradCommConfig().block_size
F32 = 4


def check_schemes(schemes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The schemes as a tuple, or one sentence naming the bad one."""
    schemes = tuple(schemes)
    if not schemes:
        raise HoloError(f"grad_comm needs at least one scheme out of {', '.join(SCHEMES)}.")
    bad = [s for s in schemes if s not in SCHEMES]
    if bad:
        raise HoloError(f"unknown gradient communication scheme `{bad[0]}`; choose from {', '.join(SCHEMES)}.")
    return schemes


def wire_bytes(values: float, scheme: str, block_size: int = BLOCK_SIZE, full_bytes: int = F32) -> float:
    """Bytes `values` gradient values occupy on the wire. `values` is rounded up to whole blocks,
    as `quantize.to_blocks` pads; `full_bytes` is the width of the exact (fp32) reduction."""
    if scheme == "fp32":
        return full_bytes * values
    blocks = math.ceil(values / block_size)
    scale = SCALE_BYTES if scheme in ("int8", "int4") else 0
    return blocks * (block_size * PAYLOAD_BITS[scheme] / 8 + scale)


def codec_hbm_bytes(values: float, scheme: str, ranks: int, block_size: int = BLOCK_SIZE) -> float:
    """HBM bytes one device reads and writes to encode and decode its `values` in a two-phase
    all-reduce over `ranks` devices, with error feedback, one pass per fused elementwise kernel:

    phase 1  read gradient + residual, write payload + new residual    (4 + 4 + w + 4 per value)
             read the `ranks` received chunks, write the reduced chunk  (w per value, 4 per owned value)
    phase 2  read owned chunk + its residual, write payload + residual (12 + w per owned value)
             read the gathered payloads, write the float32 mean        (w + 4 per value)
    where w is the encoded bytes per value and a device owns 1/ranks of the values."""
    if scheme == "fp32":
        return 0.0
    w = wire_bytes(values, scheme, block_size) / values if values else 0.0
    per_value = (12 + w) + w + (w + 4) + (4 + 12 + w) / ranks
    return values * per_value


def quantized_memory_bytes(values: float, scheme: str, ranks: int, island: int = 1,
                           block_size: int = BLOCK_SIZE) -> float:
    """Extra bytes per device a quantized scheme holds at its peak (see the module docstring):
    residuals of the `values` this device encodes (its 1/`island` share of its part of the
    bucket), send and receive buffers, and the packed float32 part itself (`island` x `values`)."""
    if scheme == "fp32":
        return 0.0
    residuals = F32 * values * (1 + 1 / ranks)
    buffers = 2 * wire_bytes(values, scheme, block_size)
    return residuals + buffers + F32 * values * island
