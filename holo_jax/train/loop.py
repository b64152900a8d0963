"""The host side of training: data in, the jitted step, metrics, checkpoints, events, signals.

`train(cfg, workdir)` runs or resumes a run in `workdir`:
  - a new workdir records the resolved config; an existing one must hold the same model, batch
    and data settings (a silent mix of two runs is worse than an error) and resumes from its
    latest checkpoint, input-pipeline position included, so the resumed run sees exactly the
    batches and random numbers the uninterrupted run would have;
  - metrics of step s are read back while step s+1 is already dispatched, so logging every step
    does not stall the devices;
  - SIGTERM/SIGINT or `stop_after` save at the next step boundary and return cleanly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from holo_jax.config import TrainConfig
from holo_jax.data import PackedBatches, make_source, make_tokenizer
from holo_jax.errors import HoloError
from holo_jax.memory import AUTO, StepCompiler, candidate_policies, microbatch_options, plan_remat, resolve_remat
from holo_jax.model import CausalLM
from holo_jax.parallel.data_parallel import make_grad_comm, resolve_grad_comm
from holo_jax.parallel.mesh import mesh_for_run
from holo_jax.parallel.rules import batch_sharding, data_parallel_size
from holo_jax.train.checkpoint import Checkpointer
from holo_jax.train.events import EventLog
from holo_jax.train.metrics_log import MetricsLog, plot_loss_curve
from holo_jax.train.optimizer import learning_rate_schedule, make_optimizer
from holo_jax.train.preemption import PreemptionGuard
from holo_jax.train.stages import Stage
from holo_jax.train.state import abstract_train_state, count_params, init_train_state
from holo_jax.train.step import jit_train_step, make_eval_step, make_train_step

# Settings that must not change when a run resumes: they change what the checkpoint means
# (`grad_comm` decides whether the state holds error-feedback residuals, and their shapes).
_RESUME_INVARIANT_KEYS = ("model", "global_batch", "data", "seed", "grad_comm")


@dataclasses.dataclass
class RunResult:
    final_step: int
    stopped_early: bool
    reason: str  # "completed" | "stop_after" | "SIGTERM" | "SIGINT"
    last_loss: float | None


def check_batch_layout(cfg: TrainConfig, dp: int) -> None:
    b, m = cfg.global_batch, cfg.microbatches
    if m < 1 or b % m:
        raise HoloError(f"global_batch={b} is not divisible by microbatches={m}; choose a divisor of {b}.")
    if (b // m) % dp:
        raise HoloError(
            f"each microbatch has {b // m} rows, which the {dp} data-parallel devices (data x fsdp) cannot "
            f"share evenly; make global_batch / microbatches a multiple of {dp}."
        )


def process_rows(sharding: jax.sharding.Sharding, global_rows: int, seq_len: int) -> tuple[int, int]:
    """This process's contiguous share of the batch rows as (shard index, shard count).

    Rows are laid out by the batch sharding; when the batch is replicated across processes
    (e.g. a tensor axis spanning hosts) several processes share the same rows."""
    slices = [idx[0] for idx in sharding.addressable_devices_indices_map((global_rows, seq_len)).values()]
    start = min(s.start or 0 for s in slices)
    stop = max(global_rows if s.stop is None else s.stop for s in slices)
    rows = stop - start
    if global_rows % rows or start % rows:
        raise HoloError(
            f"this process holds batch rows {start}..{stop}, which is not an even share of {global_rows}; "
            "use a mesh whose data-parallel axes are laid out by process."
        )
    return start // rows, global_rows // rows


def to_global(local: dict[str, np.ndarray], sharding_for, global_rows: int) -> dict[str, jax.Array]:
    return {
        k: jax.make_array_from_process_local_data(sharding_for(v.ndim), v, (global_rows, *v.shape[1:]))
        for k, v in local.items()
    }


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a row-sharded global array, in row order."""
    shards = {}
    for s in x.addressable_shards:
        shards.setdefault(s.index[0].start or 0, np.asarray(s.data))
    return np.concatenate([shards[k] for k in sorted(shards)], axis=0)


def _check_resume_config(workdir: Path, cfg: TrainConfig) -> None:
    path = workdir / "config.json"
    resolved = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists, as read back from disk
    if path.exists():
        saved = json.loads(path.read_text())
        for key in _RESUME_INVARIANT_KEYS:
            if saved.get(key) != resolved[key]:
                raise HoloError(
                    f"{workdir} holds a run with a different `{key}` setting ({saved.get(key)} vs {resolved[key]}); "
                    "resume with the same settings or start a new --workdir."
                )
    if jax.process_index() == 0:
        # Written aside and renamed, so that a crash (or another process reading it) never sees half a file.
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(resolved, indent=2))
        os.replace(tmp, path)


class _Throughput:
    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self._last = time.perf_counter()

    def tick(self) -> float:
        now = time.perf_counter()
        dt, self._last = now - self._last, now
        return self.tokens_per_step / dt if dt > 0 else 0.0


def train(cfg: TrainConfig, workdir: str | Path, *, stop_after: int | None = None,
          stages: Sequence[Stage] = ()) -> RunResult:
    cfg.model.check()
    workdir = Path(workdir).absolute()
    if workdir.exists() and not workdir.is_dir():
        raise HoloError(f"--workdir {workdir} exists and is not a directory; give a directory path.")
    primary = jax.process_index() == 0
    if primary:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HoloError(f"cannot create --workdir {workdir} ({e.strerror}); give a directory you can write to.") from None
    events = EventLog(workdir / "events.jsonl", enabled=primary)
    # `model.remat=default` runs as "auto" where a per-device budget is known, else as "none";
    # resolved before any work, so a missing budget under an explicit "auto" (CPU) fails in the
    # first second, and before the mesh, whose planner estimates with the policy that will run.
    # config.json keeps the setting as given (`asked`): a run resumed on other hardware is checked
    # against what was asked for, not against what one machine resolved it to.
    remat, remat_budget = resolve_remat(cfg.model.remat, cfg.memory.budget_bytes, jax.local_devices())
    asked, cfg = cfg, dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, remat=remat))

    mesh, mesh_plan = mesh_for_run(cfg.mesh, cfg.model, cfg.global_batch, cfg.microbatches, grad_comm_scheme=cfg.grad_comm.scheme)
    # run_start records the quantized axes and island resolved from the mesh (config.json: as asked).
    cfg = dataclasses.replace(cfg, grad_comm=resolve_grad_comm(cfg.grad_comm, mesh))
    grad_comm = make_grad_comm(cfg.grad_comm, mesh, cfg.seed)
    check_batch_layout(cfg, data_parallel_size(mesh))
    auto_remat = cfg.model.remat == AUTO
    tokenizer = make_tokenizer(cfg.data.tokenizer)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise HoloError(
            f"the tokenizer has {tokenizer.vocab_size} ids but model.vocab_size={cfg.model.vocab_size}; "
            f"set model.vocab_size={tokenizer.vocab_size}."
        )
    _check_resume_config(workdir, asked)

    b, t = cfg.global_batch, cfg.model.max_len
    rows_sharding = batch_sharding(mesh)
    shard_index, shard_count = process_rows(rows_sharding, b, t)

    sources: dict[str, Any] = {}  # opened once: every eval re-reads the same validation batches

    def data_iter(split: str) -> PackedBatches:
        if split not in sources:
            sources[split] = make_source(cfg.data, split)
        return PackedBatches(sources[split], tokenizer, seq_len=t, global_batch=b,
                             process_index=shard_index, process_count=shard_count, seed=cfg.data.seed)

    model_for = lambda policy: CausalLM(dataclasses.replace(cfg.model, remat=policy))  # noqa: E731
    # Init and eval run no backward pass, so under remat=auto any policy serves them.
    model = model_for("none") if auto_remat else CausalLM(cfg.model)
    optimizer = make_optimizer(cfg.optim, cfg.steps)
    schedule = learning_rate_schedule(cfg.optim, cfg.steps)
    example_inputs = (jnp.zeros((1, t), jnp.int32),)
    example_batch = {k: jax.ShapeDtypeStruct((b, t), jnp.int32) for k in ("inputs", "targets")}
    sharding_for = lambda ndim: batch_sharding(mesh, ndim)  # noqa: E731

    ckpt = Checkpointer(workdir / "checkpoints", cfg.checkpoint)
    metrics_log = MetricsLog(workdir, enabled=primary, tensorboard=cfg.log.tensorboard)
    # Closing the checkpoint manager on every exit path lets pending async saves finish and
    # stops orbax's background threads before interpreter shutdown.
    with contextlib.closing(ckpt), contextlib.closing(metrics_log):
        train_data = data_iter("train")
        latest = ckpt.latest_step()
        if latest is None:
            state, state_shardings = init_train_state(model, example_inputs, optimizer, stages, mesh, cfg.seed,
                                                       grad_comm=grad_comm)
            events.emit("run_start", config=cfg.to_dict(), params=count_params(state.params),
                        devices=jax.device_count(), processes=jax.process_count(), mesh=dict(mesh.shape),
                        mesh_plan=mesh_plan)
        else:
            target, state_shardings = abstract_train_state(model, example_inputs, optimizer, stages, mesh, cfg.seed,
                                                           grad_comm=grad_comm)
            data_target = {
                k: jax.ShapeDtypeStruct((b, *v.shape[1:]), v.dtype, sharding=sharding_for(v.ndim))
                for k, v in train_data.state().items()
            }
            state, data_state = ckpt.restore(latest, target, data_target)
            train_data.restore({k: local_rows(v) for k, v in data_state.items()})
            dropped = metrics_log.truncate_after(latest)
            events.emit("resume", step=latest, superseded_metric_rows=dropped, processes=jax.process_count())

        if auto_remat:
            # The planner compiles the real step per candidate; the chosen executable is the train step.
            step_for = lambda c: make_train_step(model_for(c.policy), optimizer, schedule, stages, mesh,  # noqa: E731
                                                 c.microbatches, grad_comm=grad_comm)
            plan = plan_remat(
                StepCompiler(step_for, mesh=mesh, state=state, state_shardings=state_shardings,
                             example_batch=example_batch),
                remat_budget, policies=candidate_policies(cfg.memory.policies, mesh.local_devices),
                microbatches=microbatch_options(b, data_parallel_size(mesh), cfg.microbatches,
                                                cfg.memory.max_microbatches),
                report=print if primary else None,
            )
            events.emit("remat_plan", **plan.summary())
            train_step = plan.compiled
            remat_decision, remat_text = plan.metrics(), {"remat_plan": plan.table()}
        else:
            train_step = jit_train_step(make_train_step(model, optimizer, schedule, stages, mesh, cfg.microbatches,
                                                        grad_comm=grad_comm),
                                        state_shardings, example_batch, mesh)
            remat_decision, remat_text = {"remat_policy": remat, "remat_microbatches": cfg.microbatches}, {}
        # The first metrics row of this run (or of this resumed stretch) says which policy ran and why.
        metrics_log.add_to_next_row({"remat_requested": asked.model.remat, **remat_decision}, text=remat_text)
        eval_step = make_eval_step(model, mesh, example_batch, state_shardings.params)

        def evaluate(params) -> dict[str, float]:
            data, total, tokens = data_iter("validation"), 0.0, 0.0
            for _ in range(cfg.log.eval_batches):
                out = jax.device_get(eval_step(params, to_global(next(data), sharding_for, b)))
                total, tokens = total + float(out["loss_sum"]), tokens + float(out["tokens"])
            loss = total / tokens
            return {"eval_loss": loss, "eval_perplexity": float(np.exp(min(loss, 50.0)))}

        def save(step: int, force: bool) -> None:
            if not (force or ckpt.due(step)):
                return
            data_state = to_global(train_data.state(), sharding_for, b)
            if ckpt.save(step, state, data_state, force=force):
                events.emit("checkpoint_started", step=step, directory=str(ckpt.directory))

        def report_committed() -> None:
            for saved_step in ckpt.committed():
                events.emit("checkpoint_saved", step=saved_step, directory=str(ckpt.directory))

        start = int(jax.device_get(state.step))
        end = cfg.steps if stop_after is None else min(stop_after, cfg.steps)
        throughput = _Throughput(b * t)
        progress = _progress_bar(primary and cfg.log.progress_bar, start, cfg.steps)
        pending: tuple[int, Any] | None = None  # (step, metrics) of the last dispatched step
        last_loss, reason = None, "completed"

        def flush(pending_step: int, pending_metrics: Any, eval_metrics: dict | None = None) -> float:
            host = {k: np.asarray(v).item() for k, v in jax.device_get(pending_metrics).items()}
            host["tokens_per_second"] = throughput.tick()
            if not host.pop("finite"):
                events.emit("nonfinite_step_skipped", step=pending_step, skipped_total=host["skipped_steps"])
            if eval_metrics:
                host.update(eval_metrics)
            if (pending_step % cfg.log.every_steps == 0) or pending_step == end or eval_metrics:
                metrics_log.write(pending_step, host)
            progress.update(1)
            progress.set_postfix(loss=f"{host['loss']:.3f}", tok_s=f"{host['tokens_per_second']:.0f}", refresh=False)
            return host["loss"]

        with jax.set_mesh(mesh), PreemptionGuard() as guard:
            for step in range(start, end):
                batch = to_global(next(train_data), sharding_for, b)
                state, metrics, _emitted = train_step(state, batch)
                if pending is not None:
                    last_loss = flush(*pending)
                pending = (step + 1, metrics)  # metrics are logged under the step count they lead to
                done = step + 1
                eval_metrics = None
                if cfg.log.eval_every_steps and (done % cfg.log.eval_every_steps == 0 or done == cfg.steps):
                    eval_metrics = evaluate(state.params)
                    last_loss, pending = flush(*pending, eval_metrics), None
                stop = guard.stop_requested()
                save(done, force=stop or done == end)
                report_committed()
                if stop:
                    reason = guard.signal_name or "signal"
                    break
            if pending is not None:
                last_loss = flush(*pending)
        final_step = int(jax.device_get(state.step))
        if reason == "completed" and final_step < cfg.steps:
            reason = "stop_after"
        ckpt.wait()
        report_committed()
        progress.close()
        if reason not in ("completed", "stop_after"):
            events.emit("preempted", step=final_step, signal=reason)
        if primary and cfg.log.plot:
            plot_loss_curve(workdir)
        events.emit("run_end", step=final_step, reason=reason, loss=last_loss)
        return RunResult(final_step, final_step < cfg.steps, reason, last_loss)


def _progress_bar(enabled: bool, start: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True, mininterval=1.0)
