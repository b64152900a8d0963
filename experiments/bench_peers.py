"""Peer benchmark: holo_jax against the trainers users would pick instead, side by side, in one run.

    python -m experiments.bench_peers --json [--repeats 5] [--steps-per-repeat 1] [--warmup 2]
        [--systems holo_jax,torch_eager,...] [--set model.n_layers=2 ...] [--workdir DIR]

One problem for every system (see `experiments.peers.common`): the bench_step GPT (6 layers, width
512, 8 heads, MLP 2048, sequence 256, batch 8, byte vocabulary 258 padded to 384, tied embeddings,
float32), AdamW (holo_jax's hyperparameters, decay rule, warmup + cosine rates) with global-norm
clipping at 1.0, the same initial weights, and the same batches in the same order, cut from
holo_jax's token pipeline. Systems:

    holo_jax          holo_jax's jitted train step on one device
    holo_jax_before   the same with the attention holo_jax had before issue 16 (before/after in one run)
    holo_jax_dp2      the same over 2 processes x 1 device, data parallel, gloo (experiments.launch_local)
    holo_jax_dp2_1thread  the same with one XLA compute thread per process (torchrun's OMP_NUM_THREADS=1)
    holo_jax_fsdp2    2 processes, parameters and optimizer state sharded (mesh fsdp=2)
    torch_eager       nanoGPT's loop in eager PyTorch
    torch_compile     the same with torch.compile(model)
    torch_eager_1thread, holo_jax_1thread   one compute thread each (OMP_NUM_THREADS=1; one XLA thread)
    torch_ddp         DistributedDataParallel, 2 processes, gloo (torchrun)
    torch_fsdp2       fully_shard (FSDP2, the successor of FairScale's FSDP), 2 processes, gloo
    fairscale_fsdp    FairScale's FullyShardedDataParallel, 2 processes, gloo
    deepspeed_zero1/2/3   DeepSpeed ZeRO stage 1/2/3, 2 processes

The systems of one process count (the one-device group, then the two-process group) are started
together and kept alive; after `--warmup` steps each (compilation), they take turns,
`--steps-per-repeat` steps at a time, for `--repeats` rounds (the order rotates every round), so
all systems that are compared see the same machine load. tokens/s is the median over rounds of
tokens / wall seconds of a turn (timed by this process, from the command to the last rank's
answer). Every system trains warmup + repeats x steps-per-repeat steps on the same batches, and
`final_loss` is the loss of the last one (mean over ranks, which hold equal numbers of tokens).
Peak RSS is each process's VmHWM (start-up and compilation included). Energy: joules per token
from RAPL where readable, else CPU seconds (all threads, all ranks, of the timed turns) x a stated
per-core power. A system that cannot run here is listed with the reason. Finally a short real
holo_jax run (`experiments.pretrain --config tiny`) is made, and the transparency table is filled
from the files it wrote (`experiments.peers.transparency`).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from holo_jax.errors import HoloError, exit_on_user_error

SYSTEMS: dict[str, dict[str, Any]] = {
    "holo_jax": {"kind": "holo", "processes": 1},
    # holo_jax with the attention it had before issue 16 (jax.nn.dot_product_attention): before/after in one run.
    "holo_jax_before": {"kind": "holo", "processes": 1, "attention": "xla"},
    "holo_jax_dp2": {"kind": "holo", "processes": 2},
    # The same with one XLA compute thread per process, as torchrun gives each PyTorch process
    # (OMP_NUM_THREADS=1); launch_local leaves XLA's default of one thread per core.
    "holo_jax_dp2_1thread": {"kind": "holo", "processes": 2, "threads": 1},
    # Parameters and optimizer state sharded over the 2 processes (mesh fsdp=2, ZeRO-3 style), as torch_fsdp2.
    "holo_jax_fsdp2": {"kind": "holo", "processes": 2, "fsdp": True},
    "torch_eager": {"kind": "torch", "mode": "eager", "processes": 1},
    "torch_compile": {"kind": "torch", "mode": "compile", "processes": 1},
    # One thread each (OMP_NUM_THREADS=1 / one XLA thread): what a shared machine's load does to 2 threads.
    "torch_eager_1thread": {"kind": "torch", "mode": "eager", "processes": 1, "threads": 1},
    "holo_jax_1thread": {"kind": "holo", "processes": 1, "threads": 1},
    "torch_ddp": {"kind": "torch", "mode": "ddp", "processes": 2},
    "torch_fsdp2": {"kind": "torch", "mode": "fsdp2", "processes": 2},
    "fairscale_fsdp": {"kind": "torch", "mode": "fairscale", "processes": 2, "needs": "fairscale"},
    "deepspeed_zero1": {"kind": "torch", "mode": "deepspeed1", "processes": 2, "needs": "deepspeed"},
    "deepspeed_zero2": {"kind": "torch", "mode": "deepspeed2", "processes": 2, "needs": "deepspeed"},
    "deepspeed_zero3": {"kind": "torch", "mode": "deepspeed3", "processes": 2, "needs": "deepspeed"},
}
# Run unless --systems says otherwise; the thread-count variants are a separate command (BENCHMARKS.md),
# which keeps the default run near 5 minutes.
DEFAULT_SYSTEMS = [n for n in SYSTEMS if not n.endswith("_1thread")]
REFERENCE = "torch_eager"
PAIRS = {"holo_jax": ("torch_eager", "torch_compile", "holo_jax_before"), "holo_jax_dp2": ("torch_ddp", "torch_fsdp2"),
         "holo_jax_dp2_1thread": ("torch_ddp", "torch_fsdp2"), "holo_jax_fsdp2": ("torch_fsdp2", "torch_ddp", "deepspeed_zero3"),
         "holo_jax_before": ("torch_eager",), "holo_jax_1thread": ("torch_eager_1thread",)}


def bench_config():
    """The bench_step model and optimizer (`experiments.bench_step.bench_config`)."""
    from experiments.bench_step import bench_config as step_config

    return step_config()


class Orchestrator:
    """The control socket and the systems' processes."""

    def __init__(self, workdir: Path, python: str, peer_python: str, timeout_s: float, holo_set: list[str] = ()):
        self.workdir, self.python, self.peer_python, self.timeout_s = workdir, python, peer_python, timeout_s
        self.holo_set = list(holo_set)
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.address = "%s:%d" % self.server.getsockname()
        self.procs: dict[str, subprocess.Popen] = {}
        self.channels: dict[str, list] = {}
        self.unavailable: dict[str, str] = {}
        (workdir / "logs").mkdir(parents=True, exist_ok=True)

    def command(self, name: str) -> tuple[list[str], dict[str, str]]:
        from experiments.launch_local import xla_flags_with_device_count

        system = SYSTEMS[name]
        common = ["--workdir", str(self.workdir), "--control", self.address, "--system", name]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        if system["kind"] == "holo":
            env["JAX_PLATFORMS"] = "cpu"
            env["XLA_FLAGS"] = xla_flags_with_device_count(env.get("XLA_FLAGS", ""), 1)
            worker = ["experiments.peers.holo_worker", *common, *(a for kv in self.holo_set for a in ("--set", kv))]
            if system.get("attention"):
                worker += ["--attention", system["attention"]]
            if system.get("fsdp"):
                worker += ["--fsdp"]
            if system.get("threads"):
                worker += ["--threads", str(system["threads"])]
            if system["processes"] == 1:
                return [self.python, "-m", *worker], env
            return [self.python, "-m", "experiments.launch_local", "--processes", str(system["processes"]),
                    "--devices-per-process", "1", "--timeout", str(int(self.timeout_s * 4)), "--", *worker], env
        worker = ["-m", "experiments.peers.torch_worker", *common, "--mode", system["mode"]]
        if system.get("threads"):
            env["OMP_NUM_THREADS"] = str(system["threads"])
        if system["processes"] == 1:
            return [self.peer_python, *worker], env
        # torchrun, as users start it (it sets OMP_NUM_THREADS=1 per process unless told otherwise).
        return [self.peer_python, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", str(system["processes"]), *worker], env

    def start(self, names: list[str]) -> None:
        for name in names:
            cmd, env = self.command(name)
            log = open(self.workdir / "logs" / f"{name}.log", "wb")
            self.procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True,
                                                cwd=Path(__file__).resolve().parent.parent)
            self.channels[name] = []

    def wait_for_hellos(self, names: list[str]) -> None:
        from experiments.peers.common import Channel

        want = {n: SYSTEMS[n]["processes"] for n in names}
        deadline = time.monotonic() + self.timeout_s
        self.server.settimeout(1.0)
        while any(len(self.channels[n]) < want[n] for n in names if n not in self.unavailable):
            if time.monotonic() > deadline:
                late = [n for n in names if n not in self.unavailable and len(self.channels[n]) < want[n]]
                for n in late:
                    self.unavailable[n] = f"did not start within {self.timeout_s:g} s (see logs/{n}.log)"
                break
            for n in names:
                code = self.procs[n].poll()
                if code not in (None, 0) and n not in self.unavailable and len(self.channels[n]) < want[n]:
                    self.unavailable[n] = f"exited with status {code} before starting: {self.log_tail(n)}"
            try:
                sock, _ = self.server.accept()
            except socket.timeout:
                continue
            sock.settimeout(self.timeout_s)
            channel = Channel(sock)
            hello = channel.recv()
            name = hello["system"]
            if "unavailable" in hello:
                self.unavailable.setdefault(name, hello["unavailable"])
                (self.workdir / "logs" / f"{name}.unavailable.txt").write_text(hello.get("traceback", ""))
                channel.send({"cmd": "exit"})
                channel.close()
                continue
            self.channels[name].append((hello["rank"], channel))
        for n in names:
            self.channels[n].sort(key=lambda rc: rc[0])

    def log_tail(self, name: str, lines: int = 3) -> str:
        try:
            text = (self.workdir / "logs" / f"{name}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])[-600:]

    def ask(self, name: str, message: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
        """Send `message` to every rank of `name`; (wall seconds until the last answer, answers)."""
        t0 = time.perf_counter()
        for _, channel in self.channels[name]:
            channel.send(message)
        answers = [channel.recv() for _, channel in self.channels[name]]
        return time.perf_counter() - t0, answers

    def close(self) -> None:
        for name, chans in self.channels.items():
            for _, channel in chans:
                try:
                    channel.send({"cmd": "exit"})
                    channel.recv()
                except (OSError, ConnectionError, ValueError):
                    pass
                channel.close()
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # its own session (start_new_session): only what we started
                proc.wait()
        self.channels, self.procs = {}, {}
        self.server.close()


def _find_spec(module: str):
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def _torch_available(python: str) -> str | None:
    """None if `python` imports torch, else why not."""
    if python == sys.executable:
        return None if _find_spec("torch") else "torch is not installed (pip install -e '.[peers]')"
    r = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True)
    return None if r.returncode == 0 else f"{python} cannot import torch"


def _module_available(python: str, module: str) -> bool:
    if python == sys.executable:
        return _find_spec(module) is not None
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def _versions(python: str) -> dict[str, str | None]:
    code = ("import json, importlib.metadata as m\nout = {}\n"
            "for p in ('torch', 'deepspeed', 'fairscale', 'megatron-core', 'jax', 'flax', 'optax'):\n"
            "    try: out[p] = m.version(p)\n    except Exception: out[p] = None\nprint(json.dumps(out))")
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else {}


_T0 = time.monotonic()


def _note(message: str) -> None:
    """Progress on stderr (the JSON goes to stdout)."""
    print(f"bench_peers [{time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _run_group(orch: Orchestrator, names: list[str], spec, *, repeats: int, steps_per_repeat: int, warmup: int,
               watts_per_core: float) -> dict[str, dict[str, Any]]:
    """Start `names`, warm them up, run them turn by turn, collect memory figures; the results."""
    from experiments.peers import common

    startable = [n for n in names if n not in orch.unavailable]
    _note(f"starting {', '.join(startable)}")
    orch.start(startable)
    orch.wait_for_hellos(startable)
    _note("started" + "".join(f"; {n} unavailable: {orch.unavailable[n]}" for n in startable if n in orch.unavailable))
    live = [n for n in startable if n not in orch.unavailable]
    turns: dict[str, list[dict[str, Any]]] = {n: [] for n in live}
    losses: dict[str, list[float]] = {n: [] for n in live}
    warm_seconds: dict[str, float] = {}

    def turn(name: str, k: int) -> dict[str, Any] | None:
        try:
            wall, answers = orch.ask(name, {"cmd": "run", "steps": k})
        except (OSError, ConnectionError, ValueError) as e:
            orch.unavailable[name] = f"failed while training ({type(e).__name__}): {orch.log_tail(name)}"
            return None
        per_rank = [a["losses"] for a in answers]
        losses[name].extend(statistics.fmean(v) for v in zip(*per_rank))
        return {"wall_seconds": wall, "cpu_seconds": sum(a["cpu_seconds"] for a in answers)}

    for name in live:  # warm-up (compilation) one system at a time
        t = turn(name, warmup) if warmup else {"wall_seconds": 0.0}
        if t is not None:
            warm_seconds[name] = t["wall_seconds"]
            _note(f"{name} warmed up in {t['wall_seconds']:.1f} s")
    for r in range(repeats):
        order = [n for n in live if n not in orch.unavailable]
        order = order[r % len(order):] + order[:r % len(order)] if order else order
        _note(f"round {r + 1} of {repeats}: {', '.join(order)}")
        for name in order:
            t = turn(name, steps_per_repeat)
            if t is not None:
                turns[name].append(t)
    results = {}
    tokens = spec.tokens_per_step * steps_per_repeat
    for name in live:
        if name in orch.unavailable:
            continue
        try:
            _, reports = orch.ask(name, {"cmd": "report"})
        except (OSError, ConnectionError, ValueError) as e:
            reports = [{"error": f"{type(e).__name__}: {e}"}]
        ts = turns[name]
        tps = [tokens / t["wall_seconds"] for t in ts]
        cpu_per_token = [t["cpu_seconds"] / tokens for t in ts]
        extra = {k: v for k, v in reports[0].items() if k not in ("peak_rss_bytes", "rss_bytes", "allocator")}
        results[name] = {
            "processes": SYSTEMS[name]["processes"],
            "tokens_per_second": _median(tps),
            "tokens_per_second_all": tps,
            "step_seconds": _median([t["wall_seconds"] / steps_per_repeat for t in ts]),
            "warmup_seconds": warm_seconds.get(name),
            "cpu_seconds_per_token": _median(cpu_per_token),
            "cores_busy": _median([t["cpu_seconds"] / t["wall_seconds"] for t in ts]),
            "joules_per_token": _median([common.joules_per_token(c, 1, watts_per_core) for c in cpu_per_token]),
            "losses": losses[name],
            "final_loss": losses[name][-1] if losses[name] else None,
            "peak_rss_bytes": [m.get("peak_rss_bytes") for m in reports],
            "rss_bytes": [m.get("rss_bytes") for m in reports],
            "allocator": reports[0].get("allocator"),
            **extra,
        }
    _note("stopping " + ", ".join(startable))
    orch.close()
    return results


def run(cfg, systems: list[str], *, repeats: int, steps_per_repeat: int, warmup: int, workdir: Path,
        watts_per_core: float, peer_python: str, timeout_s: float, holo_set: list[str],
        transparency_run: bool) -> dict[str, Any]:
    """Run `systems` on `cfg` (see the module docstring); the JSON object `--json` prints."""
    from experiments.peers import common, transparency

    steps = warmup + repeats * steps_per_repeat
    spec = common.prepare_workdir(cfg, steps, workdir)
    torch_missing = _torch_available(peer_python)
    unavailable: dict[str, str] = {}
    for name in systems:
        s = SYSTEMS[name]
        if s["kind"] == "torch" and torch_missing:
            unavailable[name] = torch_missing
        elif s.get("needs") and not _module_available(peer_python, s["needs"]):
            unavailable[name] = f"{s['needs']} is not installed for {peer_python}"
    # One group per process count: the systems of a group are alive together and take turns, so the
    # comparisons that matter (one device; two processes) see the same load, and no more processes
    # than one group's are resident at a time.
    results: dict[str, dict[str, Any]] = {}
    for processes in sorted({SYSTEMS[n]["processes"] for n in systems}):
        group = [n for n in systems if SYSTEMS[n]["processes"] == processes]
        orch = Orchestrator(workdir, sys.executable, peer_python, timeout_s, holo_set)
        orch.unavailable.update({n: unavailable[n] for n in group if n in unavailable})
        try:
            results.update(_run_group(orch, group, spec, repeats=repeats, steps_per_repeat=steps_per_repeat,
                                      warmup=warmup, watts_per_core=watts_per_core))
        finally:
            orch.close()
        unavailable.update(orch.unavailable)
    ref = results.get(REFERENCE)
    for name, res in results.items():
        if ref and ref["tokens_per_second"] and res["tokens_per_second"]:
            res["speed_vs_torch_eager"] = res["tokens_per_second"] / ref["tokens_per_second"]
        if ref and ref["final_loss"] is not None and res["final_loss"] is not None:
            res["final_loss_rel_diff_vs_torch_eager"] = (res["final_loss"] - ref["final_loss"]) / ref["final_loss"]
    comparisons = {}
    for holo, peers in PAIRS.items():
        for peer in peers:
            if holo in results and peer in results and results[peer]["tokens_per_second"]:
                comparisons[f"{holo}/{peer}"] = results[holo]["tokens_per_second"] / results[peer]["tokens_per_second"]
    out: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg(),
                    "versions": {**_versions(peer_python),
                                 **{k: v for k, v in _versions(sys.executable).items() if v is not None}}},
        "problem": {**{k: v for k, v in spec.to_json().items() if k != "learning_rates"},
                    "steps": steps, "warmup_steps_untimed": warmup, "repeats": repeats,
                    "steps_per_repeat": steps_per_repeat, "tokens_per_step": spec.tokens_per_step,
                    "holo_jax_overrides": holo_set},
        "method": {"timing": "systems of one process count kept alive together and run turn by turn (order "
                             "rotated each round); tokens/s = median over rounds of tokens / wall seconds of a turn",
                   "energy": common.energy_method(watts_per_core),
                   "memory": "peak RSS (VmHWM) per process, start-up and compilation included"},
        "systems": results,
        "unavailable": unavailable,
        "comparisons": comparisons,
        "not_runnable_here": transparency.NOT_RUNNABLE,
        "published": transparency.PUBLISHED,
    }
    if transparency_run:
        _note("a short real holo_jax run for the transparency table")
        out["transparency"] = transparency.table(transparency.real_holo_run(workdir / "holo_run", sys.executable))
    else:
        out["transparency"] = transparency.table(None)
    _note("done")
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_peers")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps-per-repeat", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per system first (compilation)")
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                   help="comma-separated, from: " + ", ".join(SYSTEMS) + " (default: all but the *_1thread variants)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="overrides of the benchmark config (model.*, global_batch, optim.*)")
    p.add_argument("--holo-set", action="append", default=[], metavar="KEY=VALUE",
                   help="overrides for holo_jax's workers only (e.g. model.remat=none)")
    p.add_argument("--workdir", default="runs/bench_peers")
    p.add_argument("--watts-per-core", type=float, default=None)
    p.add_argument("--peer-python", default=sys.executable,
                   help="interpreter for the PyTorch-side programs (default: this one)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a system may take to start or answer")
    p.add_argument("--no-transparency-run", action="store_true",
                   help="skip the short real holo_jax run the transparency table is filled from")
    args = p.parse_args(argv)
    from experiments.peers.common import DEFAULT_WATTS_PER_CORE

    if args.repeats < 1 or args.steps_per_repeat < 1 or args.warmup < 0:
        raise HoloError("--repeats and --steps-per-repeat must be at least 1 and --warmup at least 0, got "
                        f"{args.repeats}, {args.steps_per_repeat}, {args.warmup}")
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise HoloError(f"unknown systems {unknown or '(none given)'}; choose from: {', '.join(SYSTEMS)}")
    watts = DEFAULT_WATTS_PER_CORE if args.watts_per_core is None else args.watts_per_core
    if not watts > 0 or watts == float("inf"):
        raise HoloError(f"--watts-per-core must be a positive number, got {watts}")
    from holo_jax.config import override

    cfg = override(bench_config(), args.set)
    cfg.check()
    result = run(cfg, systems, repeats=args.repeats, steps_per_repeat=args.steps_per_repeat, warmup=args.warmup,
                 workdir=Path(args.workdir).resolve(), watts_per_core=watts, peer_python=args.peer_python,
                 timeout_s=args.timeout, holo_set=args.holo_set, transparency_run=not args.no_transparency_run)
    if args.json:
        print(json.dumps(result))
    else:
        for name, res in result["systems"].items():
            print(f"{name:>16}: {res['tokens_per_second']:8.1f} tokens/s  loss {res['final_loss']:.4f}  "
                  f"peak RSS {max(r or 0 for r in res['peak_rss_bytes']) / 2**20:7.1f} MiB  "
                  f"{res['joules_per_token'] * 1e3:.2f} mJ/token")
        for name, why in result["unavailable"].items():
            print(f"{name:>16}: unavailable: {why}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
