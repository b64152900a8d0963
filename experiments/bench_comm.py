"""Gradient-communication benchmark: wire bytes, all-reduce time over slow links, convergence.

    python -m experiments.bench_comm --json [--size 67108864] [--repeats 5] [--steps 300]
                                            [--parts wire,allreduce,loss] [--out-dir runs/bench_comm]

Prints one JSON object (run as root for the emulated links):
  wire_bytes         {fp32, bf16, int8, int4}: bytes one device sends across the `data` axis per train
                     step of the pretrain default model, mesh data=8 (8 simulated CPU devices), summed
                     from the compiled HLO's collectives (holo_jax.hlo.collective_bytes); with the ratio
                     to fp32 and, for reference, a minimal fp32 ring all-reduce of the parameters.
  allreduce_seconds  {loopback, 10gbit, 1gbit} x {fp32, bf16, int8, int4}: median wall time of one mean
                     all-reduce of --size float32 values between 2 processes (one CPU device each, gloo
                     over TCP); fp32 is `lax.pmean`, the others `collectives.quantized_pmean`. The input
                     is donated, as a train step's gradient buffer is (see MODES). The slow links are
                     emulated: both processes run in a network namespace created for the purpose,
                     whose loopback is shaped by `tc ... tbf`, and removed afterwards. Where
                     `ip netns`/`tc` are unavailable, `link_emulation` says why, `skipped_links`
                     names each link left out with its reason, a note goes to stderr, and only
                     loopback is reported.
  allreduce_seconds_fresh_output   the same, with each result written to newly allocated memory.
  final_loss         {fp32, int8_ef, int4_ef, int8_noef}: train loss after --steps steps of the pretrain
                     default on 8 simulated devices (data=8), same data and seed for all; the eval loss
                     at the end, the ratio to fp32, and a loss-curve PNG in --out-dir.

Expected run time on 2 CPU cores: ~5 minutes for wire bytes and all-reduce, ~10 minutes per
300-step training run.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from holo_jax.errors import HoloError, exit_on_user_error

SCHEMES = ("fp32", "bf16", "int8", "int4")
LINKS = {"loopback": None, "10gbit": 10e9, "1gbit": 1e9}  # bits per second; None = unshaped
RUNS = {  # final_loss key -> (grad_comm.scheme, grad_comm.error_feedback)
    "fp32": ("fp32", True), "int8_ef": ("int8", True), "int4_ef": ("int4", True), "int8_noef": ("int8", False)}
DEVICES = 8
# How the all-reduce's input buffer is treated. "donated" (the reported figure): the input is
# consumed and the result written into its memory, as in a train step, where the gradient buffer
# is dead after its reduction, and as on a GPU's pooled allocator. "fresh_output": the result
# goes to newly allocated memory, which on this VM costs ~0.15-0.2 s per 256 MB in page faults
# whatever the scheme (reported beside it, so the figure cannot hide that cost).
MODES = ("donated", "fresh_output")
BLOCK_SIZE = 256


def _pretrain_config(scheme: str, error_feedback: bool, steps: int):
    from experiments.configs.pretrain import default
    from holo_jax.config import GradCommConfig, LogConfig, MeshConfig

    cfg = default()
    return dataclasses.replace(
        cfg, steps=steps, mesh=MeshConfig(data=DEVICES, fsdp=1, tensor=1),
        grad_comm=GradCommConfig(scheme=scheme, block_size=BLOCK_SIZE, error_feedback=error_feedback),
        log=LogConfig(every_steps=1, eval_every_steps=steps, eval_batches=cfg.log.eval_batches,
                      progress_bar=False, tensorboard=False, plot=False))


# ---------------------------------------------------------------------------------- wire bytes


def wire_bytes() -> dict:
    import jax
    import jax.numpy as jnp

    from holo_jax.model import CausalLM
    from holo_jax.parallel.grad_comm_plan import make_grad_comm
    from holo_jax.hlo.collective_bytes import collectives, wire_bytes_by_dtype
    from holo_jax.parallel.mesh import build_mesh
    from holo_jax.train.optimizer import learning_rate_schedule, make_optimizer
    from holo_jax.train.state import abstract_train_state, count_params
    from holo_jax.train.step import jit_train_step, make_train_step
    from holo_jax.train.tasks import NextTokenLM

    out: dict = {"bytes": {}, "by_dtype": {}}
    for scheme in SCHEMES:
        cfg = _pretrain_config(scheme, True, 300)
        mesh = build_mesh(cfg.mesh, cfg.model)
        grad_comm = make_grad_comm(cfg.grad_comm, mesh)
        model, opt = CausalLM(cfg.model), make_optimizer(cfg.optim, cfg.steps)
        target, shardings = abstract_train_state(model, (jnp.zeros((1, cfg.model.max_len), jnp.int32),), opt, (),
                                                 mesh, grad_comm=grad_comm)
        batch = {k: jax.ShapeDtypeStruct((cfg.global_batch, cfg.model.max_len), jnp.int32) for k in ("inputs", "targets")}
        step_fn = make_train_step(NextTokenLM(), model, opt, learning_rate_schedule(cfg.optim, cfg.steps), (), mesh,
                                  grad_comm=grad_comm)
        step = jit_train_step(step_fn, shardings, batch, mesh)
        with jax.set_mesh(mesh):
            text = step.lower(target, batch).compile().as_text()
        by_dtype = wire_bytes_by_dtype(collectives(text, mesh), {"data"})
        out["by_dtype"][scheme] = by_dtype
        out["bytes"][scheme] = sum(by_dtype.values())
        out["params"] = count_params(target.params)
    out["ratio_vs_fp32"] = {s: out["bytes"]["fp32"] / b for s, b in out["bytes"].items()}
    # A ring all-reduce of exactly the parameters in float32; XLA's compiled step sends more (it
    # reduces some gradients in several pieces, e.g. the tied embedding's two uses).
    out["minimal_fp32_allreduce_bytes"] = 2 * (DEVICES - 1) / DEVICES * 4 * out["params"]
    return out


# ---------------------------------------------------------------------------- all-reduce time


def allreduce_worker(size: int, repeats: int) -> None:
    """One of the 2 processes: time each scheme's mean all-reduce; process 0 prints JSON."""
    from holo_jax.runtime import initialize

    initialize()
    import jax
    import numpy as np
    from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

    from holo_jax.parallel.collectives import quantized_pmean
    from holo_jax.parallel.quantize import Codec

    mesh = Mesh(np.asarray(jax.devices()), ("data",), axis_types=(AxisType.Auto,))
    local = np.random.default_rng(jax.process_index()).standard_normal(size, dtype=np.float32)
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local, (size * jax.process_count(),))
    times: dict = {mode: {} for mode in MODES}
    for scheme in SCHEMES:
        reduce = (functools.partial(jax.lax.pmean, axis_name="data") if scheme == "fp32" else
                  functools.partial(quantized_pmean, axis_name="data", codec=Codec(scheme, BLOCK_SIZE)))
        for mode in MODES:
            donated = mode == "donated"
            fn = jax.jit(jax.shard_map(reduce, mesh=mesh, in_specs=P("data"), out_specs=P()),
                         donate_argnums=(0,) if donated else ())
            # A donated input is consumed: each call gets its own copy, made (and its pages
            # touched) before the clock starts.
            fresh = (lambda: (x + 0.0).block_until_ready()) if donated else (lambda: x)
            fn(fresh()).block_until_ready()  # compile and warm up
            samples = []
            for _ in range(repeats):
                arg = fresh()
                t0 = time.perf_counter()
                fn(arg).block_until_ready()
                samples.append(time.perf_counter() - t0)
            times[mode][scheme] = {"median": statistics.median(samples), "samples": samples}
    if jax.process_index() == 0:
        print("ALLREDUCE " + json.dumps(times), flush=True)


@contextlib.contextmanager
def _shaped_namespace(rate_bps: float) -> Iterator[list[str]]:
    """A network namespace whose loopback is limited to `rate_bps`; yields the command prefix."""
    name = f"holo_bench_{os.getpid()}"
    burst = max(4 << 20, int(rate_bps / 8 / 100))  # >= 10 ms of traffic, or tbf caps below the rate
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        prefix = ["ip", "netns", "exec", name]
        subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        subprocess.run([*prefix, "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", f"{int(rate_bps)}bit",
                        "burst", str(burst), "latency", "200ms"], check=True, capture_output=True)
        yield prefix
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _link_emulation_problem() -> str | None:
    """None if namespaces and tc work here, else why not."""
    if not (shutil.which("ip") and shutil.which("tc")):
        return "`ip` or `tc` not found"
    try:
        with _shaped_namespace(1e9):
            return None
    except subprocess.CalledProcessError as e:
        return f"{' '.join(e.cmd[:4])} failed: {e.stderr.decode(errors='replace').strip()[:200]}"


def _time_allreduce(prefix: list[str], size: int, repeats: int, timeout: float) -> dict:
    cmd = [*prefix, sys.executable, "-m", "experiments.launch_local", "--processes", "2", "--devices-per-process", "1",
           "--timeout", str(timeout), "--", "experiments.bench_comm", "--allreduce-worker",
           "--size", str(size), "--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    for line in done.stdout.splitlines():
        if "ALLREDUCE " in line:
            return json.loads(line.split("ALLREDUCE ", 1)[1])
    raise RuntimeError(f"all-reduce workers failed (exit {done.returncode}): {done.stderr.strip()[-1000:]}")


def allreduce_seconds(size: int, repeats: int, links: list[str]) -> dict:
    """Time every scheme over each of `links`. A link that cannot be measured (no `ip`/`tc`, no
    permission for namespaces, workers that fail inside one) is skipped with its reason under
    `skipped_links` and a note on stderr; the other links are still measured."""
    unknown = [link for link in links if link not in LINKS]
    if unknown:
        raise ValueError(f"unknown links {unknown}; choose from {', '.join(LINKS)}")
    shaped = [link for link in links if LINKS[link] is not None]
    problem = _link_emulation_problem() if shaped else None
    out: dict = {"seconds": {}, "fresh_output_seconds": {}, "samples": {},
                 "link_emulation": problem or "ip netns + tc tbf on loopback", "skipped_links": {}}
    for link in links:
        if LINKS[link] is not None and problem:
            out["skipped_links"][link] = problem
            continue
        try:
            with (_shaped_namespace(LINKS[link]) if LINKS[link] else contextlib.nullcontext([])) as prefix:
                times = _time_allreduce(prefix, size, repeats, timeout=1800)
        except (subprocess.CalledProcessError, OSError, RuntimeError) as e:
            # One broken link (e.g. tc refused a rate) must not cost the figures of the others.
            reason = (f"{' '.join(map(str, e.cmd[:4]))} failed: {(e.stderr or b'').decode(errors='replace').strip()[:200]}"
                      if isinstance(e, subprocess.CalledProcessError) else str(e)[:300])
            out["skipped_links"][link] = reason
            print(f"bench_comm: {link} link not measured ({reason})", file=sys.stderr, flush=True)
            continue
        out["seconds"][link] = {s: t["median"] for s, t in times["donated"].items()}
        out["fresh_output_seconds"][link] = {s: t["median"] for s, t in times["fresh_output"].items()}
        out["samples"][link] = {mode: {s: t["samples"] for s, t in by_scheme.items()} for mode, by_scheme in times.items()}
    if shaped and all(link in out["skipped_links"] for link in shaped) and "loopback" in out["seconds"]:
        reasons = "; ".join(sorted(set(out["skipped_links"][link] for link in shaped)))
        print(f"bench_comm: cannot emulate slow links ({reasons}): reporting loopback only", file=sys.stderr, flush=True)
    def speedups(seconds: dict) -> dict:
        return {link: {s: t["fp32"] / v for s, v in t.items()} for link, t in seconds.items()}

    out["speedup_vs_fp32"] = speedups(out["seconds"])
    out["fresh_output_speedup_vs_fp32"] = speedups(out["fresh_output_seconds"])
    return out


# ---------------------------------------------------------------------------------- convergence


def final_loss(steps: int, out_dir: Path) -> dict:
    from holo_jax.train.loop import train
    from holo_jax.train.jsonl import read_metrics

    curves, evals, seconds = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (scheme, error_feedback) in RUNS.items():
            t0 = time.perf_counter()
            result = train(_pretrain_config(scheme, error_feedback, steps), Path(tmp) / name)
            seconds[name] = time.perf_counter() - t0
            if result.stopped_early:
                # train() saves and returns on SIGTERM/SIGINT as for a preemption; the losses of a
                # cut-short run are not comparable with the others', so report nothing.
                raise HoloError(f"the {name} convergence run stopped early at step {result.final_step} of {steps} "
                                f"({result.reason}), so there is no final loss to compare; rerun with --parts "
                                f"loss to measure it")
            rows = read_metrics(Path(tmp) / name / "metrics.jsonl")
            curves[name] = [(r["step"], r["loss"]) for r in rows]
            last_eval = next((r["eval_loss"] for r in reversed(rows) if "eval_loss" in r), None)
            if last_eval is None or not curves[name]:
                raise HoloError(f"the {name} convergence run wrote no {'eval' if curves[name] else 'train'} loss "
                                f"to {Path(tmp) / name / 'metrics.jsonl'}; nothing to compare")
            evals[name] = last_eval
    final = {name: curve[-1][1] for name, curve in curves.items()}
    png = _plot(curves, out_dir / "loss_curves.png")
    return {"loss": final, "eval_loss": evals, "ratio_vs_fp32": {n: v / final["fp32"] for n, v in final.items()},
            "eval_ratio_vs_fp32": {n: v / evals["fp32"] for n, v in evals.items()},
            "train_seconds": seconds, "steps": steps, "plot": str(png)}


def _plot(curves: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        ax.plot(*zip(*curve), label=name, linewidth=1.0)
    ax.set(xlabel="step", ylabel="train loss (nats/token)", title="pretrain default, data=8: gradient all-reduce scheme")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ main

PARTS = ("wire", "allreduce", "loss")


def _items(csv: str) -> list[str]:
    return [item for item in csv.split(",") if item]


def check_args(args: argparse.Namespace) -> None:
    """Reject settings that cannot produce a figure, in one sentence each, before any work."""
    for flag, value in (("--repeats", args.repeats), ("--size", args.size), ("--steps", args.steps)):
        if value < 1:
            raise HoloError(f"{flag} must be at least 1, got {value}")
    for flag, given, known in (("--parts", args.parts, PARTS), ("--links", args.links, tuple(LINKS))):
        unknown = [item for item in _items(given) if item not in known]
        if unknown or not _items(given):
            raise HoloError(f"{flag} takes a comma-separated subset of {','.join(known)}, got {given!r}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_comm", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object (the default output is indented)")
    p.add_argument("--size", type=int, default=64 * 2**20, help="float32 values per all-reduce (default 64M)")
    p.add_argument("--repeats", type=int, default=5, help="timed all-reduces per scheme and link")
    p.add_argument("--steps", type=int, default=300, help="training steps per convergence run")
    p.add_argument("--links", default=",".join(LINKS), help="subset of " + ",".join(LINKS))
    p.add_argument("--parts", default="wire,allreduce,loss", help="subset of wire,allreduce,loss")
    p.add_argument("--out-dir", type=Path, default=Path("runs/bench_comm"), help="where the loss-curve PNG goes")
    p.add_argument("--allreduce-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_args(args)
    if args.allreduce_worker:
        allreduce_worker(args.size, args.repeats)
        return 0

    # Simulated devices for the wire-bytes compile and the training runs; set before jax loads.
    from experiments.launch_local import xla_flags_with_device_count

    os.environ["XLA_FLAGS"] = xla_flags_with_device_count(os.environ.get("XLA_FLAGS", ""), DEVICES)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import jax

    parts = set(_items(args.parts))
    result: dict = {"machine": {"cpus": os.cpu_count(), "jax": jax.__version__, "devices": jax.device_count()},
                    "block_size": BLOCK_SIZE}
    if "wire" in parts:
        wire = wire_bytes()
        result["wire_bytes"] = wire.pop("bytes")
        result["wire_bytes_detail"] = wire
    if "allreduce" in parts:
        timing = allreduce_seconds(args.size, args.repeats, _items(args.links))
        result["allreduce_seconds"] = timing.pop("seconds")
        result["allreduce_seconds_fresh_output"] = timing.pop("fresh_output_seconds")
        result["allreduce_detail"] = {"size": args.size, "repeats": args.repeats, **timing}
    if "loss" in parts:
        loss = final_loss(args.steps, args.out_dir)
        result["final_loss"] = loss.pop("loss")
        result["final_loss_detail"] = loss
    print(json.dumps(result) if args.json else json.dumps(result, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
