"""A finished run's model and latest parameters, read-only, on one device: what every evaluation
command starts from (fairness_eval and explain score a classifier, drift scores any run).

`load_run(workdir, accept=...)` reads the run's effective `config.json`, rebuilds its task, model
and tokenizer, lets the caller refuse the run (`accept(task_cfg)`, e.g. "not a classifier") before
anything is read from disk, and restores only the parameters of the latest checkpoint. It never
creates, saves into or prunes the run's checkpoints, and every failure is one sentence.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax

from holo_jax.config import STAGE_CONFIGS, MeshConfig, ModelConfig, OptimConfig, StageConfig, TaskConfig
from holo_jax.errors import HoloError

PyTree = Any


@dataclasses.dataclass
class RestoredRun:
    workdir: Path
    step: int
    model_cfg: ModelConfig  # remat "none": a forward pass has no backward to rematerialise
    task_cfg: TaskConfig
    task: Any
    model: Any
    params: PyTree
    tokenizer: Any
    config: dict  # the effective config.json


def _tuples(x: Any) -> Any:
    """JSON lists back into the tuples the frozen config sections hold."""
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    if isinstance(x, dict):
        return {k: _tuples(v) for k, v in x.items()}
    return x


def config_section(cls: type, values: Any, key: str, path: Path):
    """Section `key` of the run record at `path` as `cls`, or one sentence on why it cannot be."""
    if not isinstance(values, dict):
        raise HoloError(f"{path} has no `{key}` section; it was not written by this version of holo_jax's "
                        "trainer, so its checkpoints cannot be read back here.")
    try:
        return cls(**_tuples(values))
    except TypeError as e:  # a field this code does not have (or lacks): another version wrote it
        raise HoloError(f"the `{key}` section of {path} does not match this code ({e}); evaluate the run with the "
                        "holo_jax version that trained it.") from None


def stage_sections(entries: Any, path: Path) -> tuple[StageConfig, ...]:
    stages = []
    for entry in entries or ():
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind not in STAGE_CONFIGS:
            known = ", ".join(sorted(STAGE_CONFIGS)) or "none are registered"
            raise HoloError(f"the run in {path.parent} used stage kind `{kind}`, which no module imported in this "
                            f"process registers (known: {known}); pass --plugin MODULE with the module that "
                            "registered it for training.")
        fields = {k: v for k, v in entry.items() if k != "kind"}
        stages.append(config_section(STAGE_CONFIGS[kind], fields, f"stages.{fields.get('name', kind)}", path))
    return tuple(stages)


def run_record(workdir: Path, what: str = "run") -> tuple[Path, dict]:
    """(path of config.json, the effective config) of the run in `workdir`; `what` names the kind
    of run the command wants, for the error sentences."""
    from holo_jax.train.run_config import CONFIG_FILE, _load, effective_config

    if not workdir.exists():
        raise HoloError(f"--checkpoint {workdir} does not exist; give the --workdir of a {what}.")
    if not workdir.is_dir():
        raise HoloError(f"--checkpoint {workdir} is not a directory; give the --workdir of a {what}.")
    path = workdir / CONFIG_FILE
    if not path.exists():
        # People often point at the checkpoints folder, or one step of it, instead of the run.
        for parent in (workdir.parent, workdir.parent.parent):
            if (parent / CONFIG_FILE).exists():
                raise HoloError(f"--checkpoint {workdir} holds no {CONFIG_FILE}, but {parent} does; pass the run "
                                f"directory: --checkpoint {parent}.")
        raise HoloError(f"--checkpoint {workdir} holds no {CONFIG_FILE}, so it is not a holo_jax run directory; "
                        f"give the --workdir a {what} trained in.")
    return path, effective_config(_load(path))


def load_run(workdir: str | Path, *, accept: Callable[[Path, TaskConfig], None] | None = None,
             what: str = "run") -> RestoredRun:
    """The run in `workdir` with the parameters of its latest checkpoint, on one device.

    `accept(workdir, task_cfg)` may raise HoloError to refuse the run before anything is restored.
    Raises HoloError (one sentence) for a directory that is not a run, a stage kind this process
    does not register, a tokenizer that no longer fits, or a run with no readable checkpoint."""
    from holo_jax.data import make_tokenizer
    from holo_jax.parallel.mesh import build_mesh
    from holo_jax.train.checkpoint import finished_steps, restore_params
    from holo_jax.train.optimizer import make_optimizer
    from holo_jax.train.stages import build_stages
    from holo_jax.train.state import abstract_train_state
    from holo_jax.train.tasks import make_task

    workdir = Path(workdir).absolute()
    path, config = run_record(workdir, what)
    task_cfg = config_section(TaskConfig, config.get("task"), "task", path)
    if accept is not None:
        accept(workdir, task_cfg)
    # Remat only changes what the backward pass recomputes; a forward pass has none, and the
    # parameters are the same under every policy (the loop restores any run into either).
    model_cfg = dataclasses.replace(config_section(ModelConfig, config.get("model"), "model", path), remat="none")
    optim_cfg = config_section(OptimConfig, config.get("optim"), "optim", path)
    task = make_task(task_cfg)
    stages = build_stages(stage_sections(config.get("stages"), path), task)
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    tokenizer = make_tokenizer(str(data.get("tokenizer", "byte")))
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise HoloError(f"the run's tokenizer `{data.get('tokenizer')}` has {tokenizer.vocab_size} ids but the "
                        f"model only {model_cfg.vocab_size}; the tokenizer file changed since training.")
    model = task.build_model(model_cfg)
    # One device: evaluation is a forward pass of small batches, and any checkpoint is resharded on restore.
    mesh = build_mesh(MeshConfig(data=1, fsdp=1, tensor=1, plan="manual"), model_cfg, jax.devices()[:1])
    target, _ = abstract_train_state(model, task.init_inputs(model_cfg.max_len),
                                     make_optimizer(optim_cfg, int(config.get("steps", 1))), stages, mesh,
                                     int(config.get("seed", 0)))

    directory = workdir / "checkpoints"
    if not directory.is_dir():
        raise HoloError(f"{workdir} has no checkpoints yet; train it (python -m experiments.pretrain --workdir "
                        f"{workdir} ...) until it saves one.")
    steps = finished_steps(directory)
    if not steps:
        raise HoloError(f"{workdir} has no finished checkpoint yet; train it until it saves one.")
    step = steps[-1]
    # Read-only, the parameters only; a damaged checkpoint is one sentence, its tracebacks go to the log.
    params = restore_params(directory, step, target.params, workdir / "restore_errors.log")
    return RestoredRun(workdir, int(step), model_cfg, task_cfg, task, model, params, tokenizer, config)
