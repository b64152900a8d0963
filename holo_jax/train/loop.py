"""The host side of training: data in, the jitted step, sinks, checkpoints, evaluation, signals.

`train(cfg, workdir)` runs or resumes the run in `workdir`, built from the task and stages the
config names:
  - the whole config is checked before anything else, and a workdir that holds another run is
    refused before anything in it changes (holo_jax.train.run_config);
  - everything the run will need (train and validation data, tokenizer, mesh) is opened before
    step 1, so a bad setting fails in the first seconds and never after hours of training;
  - a resumed run continues from the latest checkpoint, input-pipeline position included, so it
    sees exactly the batches and random numbers the uninterrupted run would have, and the logs
    are rewound to that step, so no step is logged twice;
  - metrics (and stage emits that are due) of step s are read back while step s+1 is already
    dispatched, so logging every step does not stall the devices;
  - at a checkpoint step the logs are made durable, the save starts, and only then does the
    evaluation run: a failure in evaluation never loses training;
  - SIGTERM/SIGINT or `stop_after` save at the next step boundary and return cleanly; a run of
    `optim.max_consecutive_skips` non-finite steps saves the last good state and stops with an error.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from holo_jax.config import TrainConfig
from holo_jax.data import make_tokenizer
from holo_jax.errors import HoloError
from holo_jax.memory import AUTO, StepCompiler, candidate_policies, microbatch_options, plan_remat, resolve_remat
from holo_jax.parallel.grad_comm_plan import make_grad_comm, resolve_grad_comm
from holo_jax.parallel.rules import batch_sharding, data_parallel_size
from holo_jax.train.checkpoint import Checkpointer, finished_steps
from holo_jax.train.jsonl import read_jsonl
from holo_jax.train.optimizer import learning_rate_schedule, make_optimizer
from holo_jax.train.preemption import PreemptionGuard
from holo_jax.train.progress import Progress
from holo_jax.train.run_config import plan_resume, write_record
from holo_jax.train.setup import check_batch_layout, local_rows, mesh_for_run, process_rows, to_global
from holo_jax.train.sinks import CompositeSink, EmittedJsonl, EventsJsonl, MetricsJsonl, Sink, TensorBoard
from holo_jax.train.stages import build_stages
from holo_jax.train.state import abstract_train_state, count_params, init_train_state
from holo_jax.train.step import jit_train_step, make_eval_step, make_train_step, pooled
from holo_jax.train.tasks import make_task
from holo_jax.train.warm_start import check_source, event_fields, restore_pretrained


@dataclasses.dataclass
class RunResult:
    final_step: int
    stopped_early: bool
    reason: str  # "completed" | "stop_after" | "SIGTERM" | "SIGINT" | "diverged" | a sink's stop_reason()
    last_loss: float | None


class _Throughput:
    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self._last = time.perf_counter()

    def tick(self) -> float:
        now = time.perf_counter()
        dt, self._last = now - self._last, now
        return self.tokens_per_step / dt if dt > 0 else 0.0


def _prepare_workdir(workdir: Path, primary: bool) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise HoloError(f"--workdir {workdir} exists and is not a directory; give a directory path.")
    if primary:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HoloError(f"cannot create --workdir {workdir} ({e.strerror}); give a directory you can write to.") from None


def _sinks(cfg: TrainConfig, workdir: Path, stages, extra: Sequence[Sink], primary: bool) -> CompositeSink:
    if not primary:
        return CompositeSink(list(extra))
    sinks: list[Sink] = [MetricsJsonl(workdir), EventsJsonl(workdir)]
    emitting = [s.name for s in stages if s.emit_every]
    if emitting:
        sinks.append(EmittedJsonl(workdir, emitting))
    if cfg.log.tensorboard:
        sinks.append(TensorBoard(workdir))
    return CompositeSink([*sinks, *extra])


def _agree(flag: bool) -> bool:
    """Process 0's answer on every process (decisions that start collectives must match)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.array(flag, dtype=np.int32)))


def train(cfg: TrainConfig, workdir: str | Path, *, stop_after: int | None = None,
          sinks: Sequence[Sink] = ()) -> RunResult:
    """Run or resume `cfg` in `workdir`; `sinks` are added to the default ones (process 0's
    metrics.jsonl, events.jsonl, emitted/, TensorBoard). Returns how and where the run stopped."""
    cfg.check()
    workdir = Path(workdir).absolute()
    primary = jax.process_index() == 0
    task = make_task(cfg.task)
    stages = build_stages(cfg.stages, task)
    # A warm start (task.init_from) is checked, and later read, only by a run that starts fresh: a
    # resumed run restores its own checkpoint and never reads the pretraining run again.
    warm_source = check_source(cfg) if cfg.task.init_from and not finished_steps(workdir / "checkpoints") else None
    # `model.remat=default` runs as "auto" where a per-device budget is known, else as "none";
    # resolved before any work, so a missing budget under an explicit "auto" (CPU) fails in the
    # first second. The run record keeps the setting as given (`asked`): a run resumed on other
    # hardware is checked against what was asked for, not what one machine resolved it to.
    remat, remat_budget = resolve_remat(cfg.model.remat, cfg.memory.budget_bytes, jax.local_devices())
    asked, cfg = cfg, dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, remat=remat))

    mesh, mesh_plan = mesh_for_run(cfg.mesh, cfg.model, cfg.global_batch, cfg.microbatches,
                                   grad_comm_scheme=cfg.grad_comm.scheme)
    # run_start records the quantized axes and island resolved from the mesh (config.json: as asked).
    cfg = dataclasses.replace(cfg, grad_comm=resolve_grad_comm(cfg.grad_comm, mesh))
    grad_comm = make_grad_comm(cfg.grad_comm, mesh, cfg.seed)
    check_batch_layout(cfg, data_parallel_size(mesh))
    tokenizer = make_tokenizer(cfg.data.tokenizer)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise HoloError(
            f"the tokenizer has {tokenizer.vocab_size} ids but model.vocab_size={cfg.model.vocab_size}; "
            f"set model.vocab_size={tokenizer.vocab_size}."
        )
    b, t = cfg.global_batch, cfg.model.max_len
    shard_index, shard_count = process_rows(batch_sharding(mesh), b, t)
    # Every split the run reads, opened (and the first validation batch read) now.
    open_split = lambda split: task.open_batches(cfg, split, tokenizer, shard_index=shard_index,  # noqa: E731
                                                 shard_count=shard_count)
    train_data = open_split("train")
    validation = open_split("validation") if cfg.log.eval_every_steps else None
    if validation is not None:
        validation_start = validation.state()
        next(validation)
        validation.restore(validation_start)
    fingerprint = getattr(getattr(train_data, "source", None), "fingerprint", None)
    # Refuses a different run (or changed data files), touching nothing.
    record, config_changes = plan_resume(workdir, asked.to_dict(), fingerprint)

    model_for = lambda policy: task.build_model(dataclasses.replace(cfg.model, remat=policy))  # noqa: E731
    # Init and eval run no backward pass, so under remat=auto any policy serves them.
    auto_remat = cfg.model.remat == AUTO
    model = model_for("none" if auto_remat else cfg.model.remat)
    optimizer = make_optimizer(cfg.optim, cfg.steps)
    schedule = learning_rate_schedule(cfg.optim, cfg.steps)
    example_inputs = task.init_inputs(t)
    example_batch = task.example_batch(b, t)

    def read_warm_start(source):
        """The pretrained parameter subtrees, read into this run's shardings."""
        target, _ = abstract_train_state(model, example_inputs, optimizer, stages, mesh, cfg.seed,
                                         grad_comm=grad_comm)
        return restore_pretrained(source, task.warm_start_params, target.params)

    # Read before the workdir changes, so a pretrained checkpoint that cannot be read costs nothing.
    given_params = read_warm_start(warm_source) if warm_source is not None else None

    _prepare_workdir(workdir, primary)
    ckpt = Checkpointer(workdir / "checkpoints", cfg.checkpoint)
    out = _sinks(cfg, workdir, stages, sinks, primary)
    # Closing the checkpoint manager on every exit path lets pending async saves finish and stops
    # orbax's background threads before interpreter shutdown; the sinks flush and close their files.
    with contextlib.closing(ckpt), contextlib.closing(out):
        latest = ckpt.latest_step()
        if primary and record is not None:
            write_record(workdir, record, config_changes, latest or 0)
        if config_changes:
            out.event("config_changed", step=latest or 0, changes=config_changes)
        if latest is None:
            if cfg.task.init_from and warm_source is None:  # its checkpoints vanished since the check above
                warm_source = check_source(cfg)
                given_params = read_warm_start(warm_source)
            state, state_shardings = init_train_state(model, example_inputs, optimizer, stages, mesh, cfg.seed,
                                                       grad_comm=grad_comm, given_params=given_params)
            rewound = out.rewind(0)  # rows a crash before the first checkpoint left behind
            out.event("run_start", config=cfg.to_dict(), task=task.name, stages=[s.name for s in stages],
                      params=count_params(state.params), devices=jax.device_count(),
                      processes=jax.process_count(), mesh=dict(mesh.shape), mesh_plan=mesh_plan,
                      superseded_rows=rewound)
            out.event("data_lineage", step=0, **_data_lineage(cfg, train_data, validation, shard_index, shard_count))
            if warm_source is not None:
                restored = {n: state.params[n] for n in given_params}
                out.event("warm_start", step=0, **event_fields(warm_source, restored, state.params))
        else:
            given_params = None  # read only if a checkpoint appeared after the check above: it wins
            target, state_shardings = abstract_train_state(model, example_inputs, optimizer, stages, mesh, cfg.seed,
                                                           grad_comm=grad_comm)
            data_target = {
                k: jax.ShapeDtypeStruct((b, *v.shape[1:]), v.dtype, sharding=batch_sharding(mesh, v.ndim))
                for k, v in train_data.state().items()
            }
            state, data_state = ckpt.restore(latest, target, data_target)
            train_data.restore({k: local_rows(v) for k, v in data_state.items()})
            rewound = out.rewind(latest)
            out.event("resume", step=latest, superseded_rows=rewound, processes=jax.process_count())
            out.event("data_lineage", step=latest, **_data_lineage(cfg, train_data, validation, shard_index, shard_count))
            if primary:
                # A save that completed just before a crash was never reported; it is on disk, so say so.
                for saved_step in _unreported_checkpoints(workdir, ckpt.all_steps()):
                    out.event("checkpoint_saved", step=saved_step, directory=str(ckpt.directory), recovered=True)

        step_for = lambda policy, m: make_train_step(task, model_for(policy), optimizer, schedule, stages,  # noqa: E731
                                                     mesh, m, grad_comm=grad_comm)
        if auto_remat:
            # The planner compiles the real step per candidate; the chosen executable is the train step.
            plan = plan_remat(
                StepCompiler(lambda c: jit_train_step(step_for(c.policy, c.microbatches), state_shardings,
                                                      example_batch, mesh),
                             mesh=mesh, state=state, example_batch=example_batch),
                remat_budget, policies=candidate_policies(cfg.memory.policies, mesh.local_devices),
                microbatches=microbatch_options(b, data_parallel_size(mesh), cfg.microbatches,
                                                cfg.memory.max_microbatches),
                report=print if primary else None,
            )
            out.event("remat_plan", **plan.summary())
            train_step = plan.compiled
            remat_decision, remat_text = plan.metrics(), plan.table()
        else:
            train_step = jit_train_step(step_for(cfg.model.remat, cfg.microbatches), state_shardings,
                                        example_batch, mesh)
            remat_decision, remat_text = {"remat_policy": remat, "remat_microbatches": cfg.microbatches}, None
        eval_step = make_eval_step(task, model, mesh, example_batch, state_shardings.params)
        start = int(jax.device_get(state.step))
        if remat_text:
            out.text(start + 1, "remat_plan", remat_text)

        def evaluate(params) -> dict[str, float]:
            validation.restore(validation_start)  # every evaluation reads the same batches
            sums, rows = [], []
            for _ in range(cfg.log.eval_batches):
                result = jax.device_get(eval_step(params, to_global(next(validation), mesh, b)))
                sums.append(result["sums"])
                rows.append(result["rows"])
            columns = {k: np.concatenate([r[k] for r in rows]) for k in (rows[0] if rows else {})}
            return task.eval_metrics(pooled(sums), columns)

        def eval_due(step: int) -> bool:
            every = cfg.log.eval_every_steps
            return bool(every) and step > 0 and (step % every == 0 or step == cfg.steps)

        end = cfg.steps if stop_after is None else min(stop_after, cfg.steps)
        throughput = _Throughput(b * t)
        progress = Progress(primary and cfg.log.progress_bar, start, cfg.steps)
        max_skips = cfg.optim.max_consecutive_skips
        first_row_fields = {"remat_requested": asked.model.remat, **remat_decision}
        pending: tuple[int, Any, dict] | None = None  # (step, metrics, emits due) of the last dispatched step
        guard: PreemptionGuard | None = None  # set below; a sink's stop request goes through it
        last_loss, reason, consecutive_skips, last_skipped = None, "completed", 0, 0

        def flush() -> None:
            """Read back and log the pending step's metrics and due emits."""
            nonlocal pending, last_loss, consecutive_skips, last_skipped, first_row_fields
            if pending is None:
                return
            step, metrics, emits = pending
            pending = None
            host = {k: np.asarray(v).item() for k, v in jax.device_get(metrics).items()}
            host["tokens_per_second"] = throughput.tick()
            if host.pop("finite"):
                consecutive_skips = 0
            else:
                consecutive_skips, last_skipped = consecutive_skips + 1, step
                out.event("nonfinite_step_skipped", step=step, skipped_total=host["skipped_steps"],
                          consecutive=consecutive_skips)
            if step % cfg.log.every_steps == 0 or step == end or first_row_fields:
                # The first row of this run (or of this resumed stretch) says which remat policy ran and why.
                out.metrics(step, {**host, **{k: v for k, v in first_row_fields.items() if k not in host}})
                first_row_fields = {}
            for name, tree in jax.device_get(emits).items():
                out.emitted(step, name, tree)
            progress.update(step, loss=f"{host['loss']:.3f}", tok_s=f"{host['tokens_per_second']:.0f}")
            last_loss = host["loss"]
            wanted = out.stop_reason()
            if wanted and guard is not None and not guard.signal_name:
                out.event("stop_requested", step=step, reason=wanted)
                guard.request(wanted)

        def save(step: int, force: bool) -> None:
            if not (force or ckpt.due(step)):
                return
            flush()
            out.sync()  # what this checkpoint covers is on disk before it can exist
            if ckpt.save(step, state, to_global(train_data.state(), mesh, b), force=force):
                out.event("checkpoint_started", step=step, directory=str(ckpt.directory))

        def report_committed() -> None:
            for saved_step in ckpt.committed():
                out.event("checkpoint_saved", step=saved_step, directory=str(ckpt.directory))

        with jax.set_mesh(mesh), PreemptionGuard() as guard:
            if start and eval_due(start) and _agree(not _has_eval_row(workdir, start, primary)):
                # The run stopped between this step's checkpoint and the end of its evaluation.
                out.metrics(start, evaluate(state.params))
            for step in range(start, end):
                batch = to_global(next(train_data), mesh, b)
                emits_due = {s.name for s in stages if s.emit_every and (step + 1) % s.emit_every == 0}
                state, metrics, emitted = train_step(state, batch)
                flush()
                pending = (step + 1, metrics, {k: v for k, v in emitted.items() if k in emits_due})
                done = step + 1
                stop = guard.stop_requested()
                diverged = consecutive_skips >= max_skips
                save(done, force=stop or diverged or done == end)
                if eval_due(done):
                    flush()
                    out.metrics(done, evaluate(state.params))
                report_committed()
                if diverged:
                    reason = "diverged"
                    break
                if stop:
                    reason = guard.signal_name or "signal"
                    break
            flush()
        final_step = int(jax.device_get(state.step))
        if reason == "completed" and final_step < cfg.steps:
            reason = "stop_after"
        ckpt.wait()
        report_committed()
        progress.close()
        if reason in ("SIGTERM", "SIGINT", "signal"):
            out.event("preempted", step=final_step, signal=reason)
        elif reason not in ("completed", "stop_after", "diverged"):
            out.event("stopped_on_request", step=final_step, reason=reason)
        if primary and cfg.log.plot:
            from holo_jax.train.plots import plot_loss_curve

            plot_loss_curve(workdir)
        out.event("run_end", step=final_step, reason=reason, loss=last_loss)
        if reason == "diverged":
            raise HoloError(
                f"{max_skips} consecutive steps had non-finite gradients or updates (the last at step "
                f"{last_skipped}), so training stopped; the last good state is saved as step {final_step} in "
                f"{ckpt.directory}: lower optim.learning_rate or check the data, then resume.")
        return RunResult(final_step, final_step < cfg.steps, reason, last_loss)


def _data_lineage(cfg: TrainConfig, train_data, validation, shard_index: int, shard_count: int) -> dict[str, Any]:
    """What this process reads: source, version, split, its shard of the rows and the data's
    fingerprint (sha256 of the files or examples, where the source computes one)."""
    def describe(batches, split: str) -> dict[str, Any]:
        source = getattr(batches, "source", None)
        return {"split": split, "source": repr(source) if source is not None else None,
                "version": getattr(source, "version", None), "fingerprint": getattr(source, "fingerprint", None)}

    splits = [describe(train_data, "train")] + ([describe(validation, "validation")] if validation is not None else [])
    return {"source": cfg.data.source, "paths": list(cfg.data.paths), "tokenizer": cfg.data.tokenizer,
            "shard_index": shard_index, "shard_count": shard_count, "splits": splits}


def _has_eval_row(workdir: Path, step: int, primary: bool) -> bool:
    if not primary:
        return True  # only process 0's answer counts (see `_agree`)
    return any(r.get("step") == step and "eval_loss" in r for r in read_jsonl(workdir / "metrics.jsonl"))


def _unreported_checkpoints(workdir: Path, steps: Sequence[int]) -> list[int]:
    reported = {e.get("step") for e in read_jsonl(workdir / "events.jsonl") if e.get("kind") == "checkpoint_saved"}
    return [s for s in sorted(steps) if s not in reported]
