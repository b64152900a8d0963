"""holo_jax in the peer benchmark: the trainer's own jitted step on the shared batches.

    python -m experiments.peers.holo_worker --workdir DIR --control HOST:PORT --system NAME
    python -m experiments.launch_local --processes 2 --devices-per-process 1 -- \\
        experiments.peers.holo_worker --workdir DIR --control HOST:PORT --system NAME

Builds what `holo_jax.train.loop.train` builds for this config (CausalLM, the AdamW + clipping +
schedule optimizer, `make_train_step`/`jit_train_step` with the state donated, a mesh over every
device of every process: data parallel, or with `--fsdp` parameters and optimizer state sharded) and feeds it the global batches of `tokens.npy`: each
process puts its own rows (`holo_jax.train.setup.to_global`), as the loop does. The initial
parameters are holo_jax's init for the spec's seed, the same arrays `init.npz` holds (checked
at start-up). What the loop adds around the step (metrics and event files, checkpoints,
evaluation) is not timed here: the PyTorch loops it is compared with do none of it either.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.peers.holo_worker")
    p.add_argument("--workdir", required=True)
    p.add_argument("--control", required=True, help="HOST:PORT of the orchestrator")
    p.add_argument("--system", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="holo_jax config overrides of the benchmark config (e.g. model.remat=none)")
    p.add_argument("--fsdp", action="store_true",
                   help="shard parameters and optimizer state over the processes (mesh fsdp axis) instead of "
                        "replicating them (data axis)")
    p.add_argument("--attention", choices=("default", "xla"), default="default",
                   help="xla: jax.nn.dot_product_attention on every backend, the path before issue 16's change "
                        "(for before/after figures in one run)")
    p.add_argument("--threads", type=int, default=0,
                   help="XLA:CPU compute threads of this process (0: XLA's default, one per core)")
    args = p.parse_args(argv)

    from holo_jax.runtime import initialize

    initialize()  # a no-op unless launched as one of several processes
    if args.threads:
        _limit_xla_threads(args.threads)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from experiments.peers.common import INIT_FILE, TOKENS_FILE, connect, load_spec, rank_rows, serve
    from holo_jax.config import MeshConfig, override
    from holo_jax.model import CausalLM
    from holo_jax.parallel.mesh import build_mesh
    from holo_jax.train.optimizer import learning_rate_schedule, make_optimizer
    from holo_jax.train.setup import to_global
    from holo_jax.train.state import init_train_state
    from holo_jax.train.step import jit_train_step, make_train_step
    from holo_jax.train.tasks import NextTokenLM

    if args.attention == "xla":
        from holo_jax.model import transformer

        transformer._attention = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)
    spec = load_spec(args.workdir)
    cfg = override(config_for(spec), args.set)
    rates = learning_rate_schedule(cfg.optim, cfg.steps)
    if not np.allclose([float(rates(i)) for i in range(cfg.steps)], spec.learning_rates, rtol=1e-6, atol=0):
        raise AssertionError("holo_jax's schedule for this config differs from spec.json's learning rates")
    devices = jax.devices()
    n = len(devices)
    axes = MeshConfig(data=1, fsdp=n, tensor=1, plan="manual") if args.fsdp else MeshConfig(data=n, fsdp=1, tensor=1,
                                                                                            plan="manual")
    mesh = build_mesh(axes, cfg.model, devices)
    model = CausalLM(cfg.model)
    optimizer = make_optimizer(cfg.optim, cfg.steps)
    t = cfg.model.max_len
    state, shardings = init_train_state(model, (jnp.zeros((1, t), jnp.int32),), optimizer, (), mesh, cfg.seed)
    _check_same_init(state.params, np.load(os.path.join(args.workdir, INIT_FILE)))
    task = NextTokenLM()
    step = jit_train_step(
        make_train_step(task, model, optimizer, learning_rate_schedule(cfg.optim, cfg.steps), (), mesh,
                        cfg.microbatches),
        shardings, task.example_batch(cfg.global_batch, t), mesh,
    )
    tokens = np.load(os.path.join(args.workdir, TOKENS_FILE), mmap_mode="r")
    rows = rank_rows(spec.global_batch, jax.process_index(), jax.process_count())

    class Loop:
        def __init__(self):
            self.state, self.done = state, 0

        def batch(self, s: int):
            local = np.asarray(tokens[s, rows])
            return to_global({"inputs": local[:, :-1], "targets": local[:, 1:]}, mesh, spec.global_batch)

        def run(self, k: int) -> list[float]:
            losses = []
            with jax.set_mesh(mesh):
                nxt = self.batch(self.done)
                for i in range(k):
                    self.state, metrics, _ = step(self.state, nxt)
                    losses.append(metrics["loss"])
                    self.done += 1
                    if i + 1 < k:  # the next batch goes to the device while this step runs
                        nxt = self.batch(self.done)
                jax.block_until_ready(self.state)
            return [float(x) for x in losses]

        def report(self) -> dict:
            analysis = step.lower(self.state, self.batch(0)).compile().memory_analysis()
            figures = {"jax_device_memory_stats": jax.local_devices()[0].memory_stats()}
            if analysis is not None:
                figures["xla_compiled_step_bytes"] = {
                    k: int(getattr(analysis, k)) for k in
                    ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes")}
            return {"allocator": figures, "framework": f"jax {jax.__version__}", "remat": cfg.model.remat,
                    "devices": len(devices), "processes": jax.process_count(), "mesh": dict(mesh.shape),
                    "attention": args.attention}

    channel = connect(args.control, {"system": args.system, "rank": jax.process_index(),
                                     "world": jax.process_count()})
    serve(Loop(), channel)
    return 0


def _limit_xla_threads(threads: int) -> None:
    """Create JAX's CPU backend with `threads` compute threads, as torchrun's OMP_NUM_THREADS=1 does
    for PyTorch. XLA:CPU sizes its thread pool by the CPUs the process may run on when the backend
    is created, so the affinity is narrowed for that moment only and then restored: the threads
    are not pinned, the scheduler may still move them (other jobs share this machine)."""
    import jax

    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(sorted(allowed)[:threads]))
    try:
        jax.devices()
    finally:
        os.sched_setaffinity(0, allowed)


def config_for(spec):
    """The holo_jax TrainConfig of a spec (the inverse of `common.spec_from_config`)."""
    from holo_jax.config import MeshConfig, ModelConfig, OptimConfig, TrainConfig

    return TrainConfig(
        model=ModelConfig(vocab_size=spec.vocab_size, d_model=spec.d_model, n_layers=spec.n_layers,
                          n_heads=spec.n_heads, d_ff=spec.d_ff, max_len=spec.seq_len,
                          tie_embeddings=spec.tie_embeddings, compute_dtype=spec.compute_dtype,
                          remat=spec.remat, vocab_multiple=spec.padded_vocab),
        mesh=MeshConfig(data=1, fsdp=1, tensor=1),
        optim=OptimConfig(learning_rate=spec.learning_rate, warmup_steps=spec.warmup_steps,
                          min_lr_ratio=spec.min_lr_ratio, b1=spec.b1, b2=spec.b2, eps=spec.eps,
                          weight_decay=spec.weight_decay, grad_clip_norm=spec.grad_clip_norm),
        steps=spec.steps,
        global_batch=spec.global_batch,
        seed=spec.seed,
    )


def _check_same_init(params, saved) -> None:
    import jax
    import numpy as np

    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = "/".join(getattr(k, "key", str(k)) for k in path)
        full = saved[name]
        for shard in leaf.addressable_shards:  # this process's part (all of it unless sharded over processes)
            if not np.array_equal(np.asarray(shard.data), full[shard.index]):
                raise AssertionError(f"holo_jax's init of {name} differs from init.npz")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
