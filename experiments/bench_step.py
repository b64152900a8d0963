"""Step-time benchmark: model FLOPs utilisation of the train step against this machine's matmul rate.

    python -m experiments.bench_step --json [--repeats 10] [--set model.n_layers=8 ...]

Prints one JSON object: `flops_per_step` (model FLOPs, counted the standard way: 6 x parameters x
tokens for the matmuls plus 12 x layers x width x sequence per token for attention, as in the PaLM
paper's appendix B — recomputation is never counted), `step_seconds` (median of repeats),
`tokens_per_second`, `matmul_flops_per_second` (a float32 2048^3 matmul measured in the same run
on the same device) and `mfu` = flops_per_step / step_seconds / matmul_flops_per_second.
Using the measured matmul rate as the peak makes the ratio meaningful on a shared CPU where no
datasheet peak applies; on a GPU pass `--peak-flops` to use the datasheet figure instead.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from holo_jax.errors import HoloError, exit_on_user_error


def bench_config():
    from holo_jax.config import MeshConfig, ModelConfig, OptimConfig, TrainConfig

    # ~19M parameters, sequence 256; float32 is this CPU's fastest matmul dtype. Remat policy
    # `dots_no_batch` (keep the projection outputs, recompute LayerNorm/GELU/softmax and the
    # attention core in the backward pass) is the fastest policy here: without remat the scanned
    # layers stack every saved activation through dynamic-update-slices, whose traffic costs more
    # on a CPU than the recomputation. The recomputed FLOPs are not counted as model FLOPs.
    return TrainConfig(
        model=ModelConfig(d_model=512, n_layers=6, n_heads=8, d_ff=2048, max_len=256, compute_dtype="float32",
                          remat="dots_no_batch"),
        mesh=MeshConfig(data=1, fsdp=1, tensor=1),
        optim=OptimConfig(warmup_steps=2),
        steps=1000,
        global_batch=8,
    )


def model_flops_per_token(model_cfg, param_count_non_embedding: int) -> float:
    """6N for forward+backward matmuls, plus attention scores and values: 12 * L * d * T."""
    return 6.0 * param_count_non_embedding + 12.0 * model_cfg.n_layers * model_cfg.d_model * model_cfg.max_len


def matmul_params(model_cfg, params) -> int:
    """Parameters that multiply activations: all but the token and position lookups, plus, with
    tied embeddings, the output projection (the embedding used once more, as a matmul; an untied
    `lm_head` is among the parameters already)."""
    from holo_jax.train.state import count_params

    decoder = params["decoder"]
    lookups = decoder["embedding"].size + decoder["position_embedding"].size
    tied_head = model_cfg.padded_vocab * model_cfg.d_model if model_cfg.tie_embeddings else 0
    return count_params(params) - lookups + tied_head


def flops_per_step(cfg, params) -> float:
    """Model FLOPs of one train step of `cfg` (see the module docstring)."""
    return model_flops_per_token(cfg.model, matmul_params(cfg.model, params)) * cfg.global_batch * cfg.model.max_len


def make_matmul_probe(n: int = 2048):
    """A jitted float32 n^3 matmul on the default device; returns (run_once, flops)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    return (lambda: f(a, b).block_until_ready()), 2.0 * n**3


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(cfg, repeats: int, warmup: int = 2, peak_flops: float | None = None) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from holo_jax.model import CausalLM
    from holo_jax.parallel.mesh import build_mesh
    from holo_jax.train.optimizer import learning_rate_schedule, make_optimizer
    from holo_jax.train.state import count_params, init_train_state
    from holo_jax.train.step import jit_train_step, make_train_step
    from holo_jax.train.tasks import NextTokenLM

    devices = jax.devices()[:1]
    mesh = build_mesh(cfg.mesh, cfg.model, devices)
    model = CausalLM(cfg.model)
    optimizer = make_optimizer(cfg.optim, cfg.steps)
    b, t = cfg.global_batch, cfg.model.max_len
    state, shardings = init_train_state(model, (jnp.zeros((1, t), jnp.int32),), optimizer, (), mesh, cfg.seed)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.model.vocab_size, (b, t + 1)).astype(np.int32)
    batch = {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:])}
    step = jit_train_step(
        make_train_step(NextTokenLM(), model, optimizer, learning_rate_schedule(cfg.optim, cfg.steps), (), mesh,
                        cfg.microbatches),
        shardings, batch, mesh,
    )
    total = count_params(state.params)
    n_matmul = matmul_params(cfg.model, state.params)
    step_flops = flops_per_step(cfg, state.params)

    def one_step():
        nonlocal state, metrics
        state, metrics, _ = step(state, batch)
        jax.block_until_ready(state)

    # Step and matmul probe alternate, so both see the same (shared, noisy) machine.
    probe, probe_flops = make_matmul_probe()
    metrics = None
    with jax.set_mesh(mesh):
        for _ in range(warmup):
            one_step()
        times, probe_times = [], []
        for _ in range(repeats):
            times.append(_timed(one_step))
            probe_times.append(min(_timed(probe) for _ in range(3)))
    step_seconds = statistics.median(times)
    rate = probe_flops / statistics.median(probe_times)
    peak = peak_flops or rate
    return {
        "device": str(devices[0].device_kind),
        "params": total,
        "matmul_params": n_matmul,
        "global_batch": b,
        "seq_len": t,
        "compute_dtype": cfg.model.compute_dtype,
        "remat": cfg.model.remat,
        "scan_layers": cfg.model.scan_layers,
        "flops_per_step": step_flops,
        "step_seconds": step_seconds,
        "step_seconds_all": times,
        "tokens_per_second": b * t / step_seconds,
        "matmul_flops_per_second": rate,
        "model_flops_per_second": step_flops / step_seconds,
        "mfu": step_flops / step_seconds / peak,
        "peak_flops_source": "datasheet (--peak-flops)" if peak_flops else "measured fp32 2048^3 matmul",
        "repeats": repeats,
        "final_loss": float(metrics["loss"]),
    }


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_step")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--peak-flops", type=float, help="device peak FLOP/s (e.g. 312e12 for A100 bf16)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if args.repeats < 1:  # before JAX starts: statistics.median([]) would fail after the work
        raise HoloError(f"--repeats must be at least 1, got {args.repeats}")
    if args.peak_flops is not None and not (args.peak_flops > 0 and args.peak_flops != float("inf")):
        raise HoloError(f"--peak-flops must be a positive number of FLOP/s, got {args.peak_flops}")
    from holo_jax.config import override

    cfg = override(bench_config(), args.set)
    result = run(cfg, args.repeats, peak_flops=args.peak_flops)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>26}: {v}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
