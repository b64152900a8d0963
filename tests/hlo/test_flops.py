"""FLOPs from compiled HLO: the same count as XLA's cost analysis, but loop bodies times their trip count."""
import jax
import jax.numpy as jnp
import pytest

from holo_jax.hlo import HloFlopsError, hlo_flops

LAYERS, N = 4, 64


def layer(x, w):
    return jnp.tanh(x @ w) + 1.0


def unrolled(x, ws):
    for i in range(LAYERS):
        x = layer(x, ws[i])
    return x.sum()


def scanned(x, ws):
    x, _ = jax.lax.scan(lambda h, w: (layer(h, w), None), x, ws)
    return x.sum()


def compile_(f, *args):
    return jax.jit(f).lower(*args).compile()


ARGS = (jnp.ones((N, N)), jnp.ones((LAYERS, N, N)))


def test_loop_free_program_matches_xla_cost_analysis():
    compiled = compile_(jax.grad(unrolled), *ARGS)
    assert hlo_flops(compiled.as_text()) == pytest.approx(compiled.cost_analysis()["flops"], rel=0.01)


def test_scan_body_counts_once_per_iteration():
    loop = compile_(jax.grad(scanned), *ARGS)
    flat = compile_(jax.grad(unrolled), *ARGS)
    assert hlo_flops(loop.as_text()) == pytest.approx(hlo_flops(flat.as_text()), rel=0.02)
    # What this module exists for: XLA's own figure counts each loop body once.
    assert loop.cost_analysis()["flops"] < 0.5 * hlo_flops(loop.as_text())


def test_nested_loops_multiply_trip_counts():
    def nested(x, w):
        def outer(h, _):
            h, _ = jax.lax.scan(lambda g, _: (g @ w, None), h, None, length=4)
            return h, None
        return jax.lax.scan(outer, x, None, length=3)[0]

    matmuls = 3 * 4 * 2 * N**3
    assert hlo_flops(compile_(nested, jnp.ones((N, N)), jnp.ones((N, N))).as_text()) == pytest.approx(matmuls, rel=0.01)


def test_loop_with_data_dependent_trip_count_is_refused():
    f = lambda x: jax.lax.while_loop(lambda v: v.sum() < 100.0, lambda v: v @ v + 1.0, x)  # noqa: E731
    with pytest.raises(HloFlopsError, match="no known trip count"):
        hlo_flops(compile_(f, jnp.ones((4, 4))).as_text())


# A cuBLAS GEMM as XLA's GPU backend writes it (format of XLA's gemm_rewriter tests): the dot
# becomes a custom call returning (result, workspace), dimension numbers in the backend config.
GPU_GEMM_HLO = """HloModule gemm

ENTRY %main (p0: f32[32,64], p1: f32[64,16]) -> f32[32,16] {
  %p0 = f32[32,64]{1,0} parameter(0)
  %p1 = f32[64,16]{1,0} parameter(1)
  %gemm = (f32[32,16]{1,0}, s8[0]{0}) custom-call(%p0, %p1), custom_call_target="__cublas$gemm", backend_config={"gemm_backend_config":{"alpha_real":1,"beta":0,"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],"rhs_batch_dimensions":[]}}}
  ROOT %out = f32[32,16]{1,0} get-tuple-element(%gemm), index=0
}
"""


def test_cublas_gemm_custom_calls_count_as_matmuls():
    assert hlo_flops(GPU_GEMM_HLO) == 2 * 32 * 16 * 64
