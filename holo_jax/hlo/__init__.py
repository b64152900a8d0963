"""Costs read from a compiled program's optimised HLO text: FLOPs and bytes on the wire, both
counted per execution of the computation that holds them (one walk, `holo_jax.hlo.walk`)."""
from holo_jax.hlo.collective_bytes import Collective, collectives, wire_bytes, wire_bytes_by_dtype
from holo_jax.hlo.flops import HloFlopsError, hlo_flops
from holo_jax.hlo.walk import HloTextError

__all__ = ["Collective", "HloFlopsError", "HloTextError", "collectives", "hlo_flops", "wire_bytes",
           "wire_bytes_by_dtype"]
