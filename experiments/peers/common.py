"""What every program of the peer benchmark shares; nothing here imports JAX or torch at load time.

The benchmark fixes one problem and hands it to every system as files plus one JSON spec:

    spec.json     the GPT (layers, width, heads, MLP width, sequence, vocabulary and its padding, tied
                  embeddings, GELU tanh, LayerNorm eps, float32), the global batch, AdamW's
                  hyperparameters, global-norm clipping, the weight-decay rule and the learning rate
                  of every step (computed once with holo_jax's own optax schedule)
    tokens.npy    int32 [steps, global_batch, seq_len + 1]: the batches, in order, cut by holo_jax's
                  PackedBatches from the configured source (rows [:, :-1] are inputs, [:, 1:] targets)
    init.npz      the initial parameters holo_jax's init writes (`decoder/blocks/mlp/wi/kernel`,
                  scanned layers first), which the PyTorch programs load into their own layout, so
                  every system starts from the same weights and sees the same tokens in the same order

A worker connects to the orchestrator's control socket (127.0.0.1), says who it is, and then obeys
newline-delimited JSON commands: `{"cmd": "run", "steps": k}` runs the next k batches and answers
with the per-step losses, the worker's wall and CPU seconds; `{"cmd": "report"}` answers with
memory figures; `{"cmd": "exit"}` ends it. Data-parallel ranks each take their contiguous share of
every global batch's rows (rank r of R: rows [r*B/R, (r+1)*B/R)), as holo_jax's pipeline lays
them out over processes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import socket
import time
from pathlib import Path
from typing import Any

SPEC_FILE, TOKENS_FILE, INIT_FILE = "spec.json", "tokens.npy", "init.npz"

# The energy estimate where no power counter is readable (this machine is a KVM guest without
# /sys/class/powercap): CPU seconds x this figure. Source: Intel's published TDP of a 4th-generation
# Xeon Scalable part of the kind this guest's CPU flags describe (AMX, AVX512-FP16): Xeon Platinum
# 8480+, 350 W TDP for 56 cores = 6.25 W per core (https://www.intel.com/content/www/us/en/products/
# sku/231746/intel-xeon-platinum-8480-processor-105m-cache-2-00-ghz/specifications.html). TDP is a
# thermal design figure, not a measurement: the estimate ranks systems by CPU time, it does not
# meter them. Uncore, memory and idle power are not included.
DEFAULT_WATTS_PER_CORE = 6.25
WATTS_PER_CORE_SOURCE = ("Intel Xeon Platinum 8480+ TDP 350 W / 56 cores (Intel ARK product 231746); "
                         "the guest hides its CPU model, its flags (AMX, AVX512-FP16) are 4th-gen Xeon's")
RAPL_ROOT = Path("/sys/class/powercap")


@dataclasses.dataclass(frozen=True)
class PeerSpec:
    """The benchmark problem, as every worker reads it from `spec.json`."""

    vocab_size: int
    padded_vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    seq_len: int
    global_batch: int
    tie_embeddings: bool
    learning_rates: tuple[float, ...]  # the rate of step 1, 2, ... (holo_jax's schedule, precomputed)
    learning_rate: float  # the schedule's peak (linear warmup from 0, cosine decay to peak x min_lr_ratio)
    warmup_steps: int
    min_lr_ratio: float
    b1: float
    b2: float
    eps: float
    weight_decay: float
    grad_clip_norm: float
    seed: int
    remat: str  # holo_jax's remat policy for this run (the PyTorch loops save every activation)
    compute_dtype: str = "float32"
    gelu: str = "tanh"  # flax's nn.gelu default; PyTorch: F.gelu(approximate="tanh")
    layer_norm_eps: float = 1e-5
    # Parameters without weight decay, by last path component (holo_jax.train.optimizer):
    # LayerNorm scales and every bias; every matrix (embeddings included) is decayed, as nanoGPT
    # decays every parameter of 2 or more dimensions.
    undecayed: tuple[str, ...] = ("scale", "bias")

    @property
    def steps(self) -> int:
        return len(self.learning_rates)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["learning_rates"] = list(self.learning_rates)
        d["undecayed"] = list(self.undecayed)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PeerSpec":
        return cls(**{**d, "learning_rates": tuple(d["learning_rates"]), "undecayed": tuple(d["undecayed"])})


def load_spec(workdir: str | Path) -> PeerSpec:
    return PeerSpec.from_json(json.loads((Path(workdir) / SPEC_FILE).read_text()))


def rank_rows(global_batch: int, rank: int, world: int) -> slice:
    """Rank `rank` of `world`'s rows of every global batch (contiguous, as holo_jax's pipeline)."""
    if global_batch % world:
        raise ValueError(f"global batch {global_batch} does not split over {world} ranks")
    local = global_batch // world
    return slice(rank * local, (rank + 1) * local)


# ----------------------------------------------------------------------------------------------
# The holo_jax side of the set-up (imports holo_jax, JAX only where stated)


def spec_from_config(cfg, steps: int) -> PeerSpec:
    """The spec for a holo_jax TrainConfig trained for `steps` steps (the schedule spans them)."""
    import numpy as np

    from holo_jax.train.optimizer import learning_rate_schedule

    schedule = learning_rate_schedule(cfg.optim, steps)
    # optax evaluates the schedule at the count of updates already applied: step s uses schedule(s - 1).
    rates = tuple(float(np.asarray(schedule(i))) for i in range(steps))
    m, o = cfg.model, cfg.optim
    return PeerSpec(
        vocab_size=m.vocab_size, padded_vocab=m.padded_vocab, d_model=m.d_model, n_layers=m.n_layers,
        n_heads=m.n_heads, d_ff=m.d_ff, seq_len=m.max_len, global_batch=cfg.global_batch,
        tie_embeddings=m.tie_embeddings, learning_rates=rates, learning_rate=o.learning_rate,
        warmup_steps=o.warmup_steps, min_lr_ratio=o.min_lr_ratio, b1=o.b1, b2=o.b2, eps=o.eps,
        weight_decay=o.weight_decay, grad_clip_norm=o.grad_clip_norm, seed=cfg.seed, remat=m.remat,
        compute_dtype=m.compute_dtype,
    )


def token_stream(cfg, steps: int):
    """int32 [steps, global_batch, seq_len + 1]: the first `steps` global batches of holo_jax's
    training pipeline for `cfg` (one process reads all rows, which PackedBatches guarantees equals
    what P processes read together)."""
    import numpy as np

    from holo_jax.data import PackedBatches, make_source, make_tokenizer

    batches = PackedBatches(make_source(cfg.data, "train"), make_tokenizer(cfg.data.tokenizer),
                            seq_len=cfg.model.max_len, global_batch=cfg.global_batch, seed=cfg.data.seed)
    out = np.empty((steps, cfg.global_batch, cfg.model.max_len + 1), np.int32)
    for s in range(steps):
        b = next(batches)
        out[s, :, :-1] = b["inputs"]
        out[s, :, -1] = b["targets"][:, -1]
        if not np.array_equal(b["inputs"][:, 1:], b["targets"][:, :-1]):
            raise AssertionError("PackedBatches' targets are not its inputs shifted by one")
    return out


def initial_params(cfg) -> dict[str, Any]:
    """holo_jax's initial parameters for `cfg` as a flat {"a/b/c": numpy array} (imports JAX)."""
    import jax
    import numpy as np

    from holo_jax.model import CausalLM
    from holo_jax.parallel.mesh import build_mesh
    from holo_jax.config import MeshConfig
    from holo_jax.train.optimizer import make_optimizer
    from holo_jax.train.state import init_train_state
    import jax.numpy as jnp

    mesh = build_mesh(MeshConfig(data=1, fsdp=1, tensor=1), cfg.model, jax.devices()[:1])
    state, _ = init_train_state(CausalLM(cfg.model), (jnp.zeros((1, cfg.model.max_len), jnp.int32),),
                                make_optimizer(cfg.optim, cfg.steps), (), mesh, cfg.seed)
    flat = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
        flat["/".join(getattr(k, "key", str(k)) for k in path)] = np.asarray(leaf)
    return flat


def prepare_workdir(cfg, steps: int, workdir: str | Path) -> PeerSpec:
    """Write spec.json, tokens.npy and init.npz for `cfg` into `workdir`; return the spec."""
    import numpy as np

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = spec_from_config(cfg, steps)
    np.save(workdir / TOKENS_FILE, token_stream(cfg, steps))
    np.savez(workdir / INIT_FILE, **initial_params(cfg))
    (workdir / SPEC_FILE).write_text(json.dumps(spec.to_json(), indent=1))
    return spec


# ----------------------------------------------------------------------------------------------
# Process figures


def _status_kib(field: str, pid: int | str = "self") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_bytes() -> int:
    """Peak resident set of this process (VmHWM; getrusage's ru_maxrss where /proc is absent)."""
    kib = _status_kib("VmHWM")
    return 1024 * (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def rss_bytes() -> int | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else 1024 * kib


def cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads."""
    return time.process_time()


def rapl_energy_uj() -> dict[str, int] | None:
    """Cumulative energy per RAPL package domain (microjoules), or None where unreadable."""
    if not RAPL_ROOT.is_dir():
        return None
    out = {}
    for d in sorted(RAPL_ROOT.glob("intel-rapl:*")):
        if d.name.count(":") != 1:  # packages only; their sub-zones (core, dram) are inside them
            continue
        try:
            out[d.name] = int((d / "energy_uj").read_text())
        except (OSError, ValueError):
            return None
    return out or None


def energy_method(watts_per_core: float) -> dict[str, Any]:
    """How joules are obtained on this machine: RAPL if readable, else the stated estimate."""
    if rapl_energy_uj() is not None:
        return {"method": "rapl", "source": str(RAPL_ROOT)}
    why = "not present" if not RAPL_ROOT.exists() else "not readable"
    return {"method": "estimate: cpu_seconds x watts_per_core", "watts_per_core": watts_per_core,
            "watts_per_core_source": WATTS_PER_CORE_SOURCE if watts_per_core == DEFAULT_WATTS_PER_CORE
            else "given with --watts-per-core",
            "why_not_rapl": f"{RAPL_ROOT} {why} (KVM guest)", "nvml": "no GPU"}


def joules_per_token(cpu_s: float, tokens: int, watts_per_core: float) -> float:
    return cpu_s * watts_per_core / tokens


# ----------------------------------------------------------------------------------------------
# Control channel


class Channel:
    """Newline-delimited JSON over a connected socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._reader = sock.makefile("r", encoding="utf-8")

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall((json.dumps(message) + "\n").encode())

    def recv(self) -> dict[str, Any]:
        line = self._reader.readline()
        if not line:
            raise ConnectionError("the other side closed the control channel")
        return json.loads(line)

    def close(self) -> None:
        try:
            self._reader.close()
            self.sock.close()
        except OSError:
            pass


def connect(address: str, hello: dict[str, Any], timeout_s: float = 120.0) -> Channel:
    """A worker's channel to the orchestrator at HOST:PORT, after sending `hello`."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    sock.settimeout(None)
    channel = Channel(sock)
    channel.send({**hello, "pid": os.getpid()})
    return channel


def serve(worker_loop, channel: Channel) -> None:
    """Answer the orchestrator's commands with `worker_loop.run(k)` / `.report()` until `exit`."""
    while True:
        msg = channel.recv()
        cmd = msg["cmd"]
        if cmd == "run":
            w0, c0 = time.perf_counter(), cpu_seconds()
            losses = worker_loop.run(int(msg["steps"]))
            channel.send({"losses": losses, "wall_seconds": time.perf_counter() - w0,
                          "cpu_seconds": cpu_seconds() - c0})
        elif cmd == "report":
            channel.send({"peak_rss_bytes": peak_rss_bytes(), "rss_bytes": rss_bytes(), **worker_loop.report()})
        elif cmd == "exit":
            channel.send({"bye": True})
            channel.close()
            return
        else:
            channel.send({"error": f"unknown command {cmd!r}"})
