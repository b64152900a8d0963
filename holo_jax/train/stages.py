"""Stages: pure functions wrapped around the train step (docs/DESIGN.md, "Tasks, stages, sinks").

A stage adds one concern to the step without the step knowing it by name: an adversary's loss
term and its own optimizer, a gradient projection, statistics for a drift monitor. Every hook has
a do-nothing default, stages compose in order like `optax.chain`, and all hooks run inside `jit`
(no I/O; what the host needs leaves through `emit`).

Hook order inside one step:
  per microbatch     loss(params, stage_state, batch, outputs, key) -> (terms, stats)
  after aggregation  grads(grads, term_grads, stage_state, stats, key) -> (grads, stage_state)
                     update(stage_state, stats, key) -> stage_state    (the stage's own learning)
                     metrics(stage_state, stats) -> {name: scalar}     (metrics.jsonl as NAME/<key>)
                     emit(stage_state, stats) -> pytree                (host sinks, every emit_every steps)

`terms` are named loss terms `{term: Stat(sum, count)}`: the step minimises the task's term plus
every stage's `sum / count`, the counts taken over the whole global batch. `stats` is any pytree
whose leaves add up (Stat pairs, counters, gradient sums); the step adds them over microbatches and
replicas and hands the totals to the later hooks (holo_jax.train.stats). A stage that needs the
gradient of one term apart from the rest (the projection of Zhang et al. 2018 needs the task's
and the adversary's separately) names it in `grad_terms` — `"task"` or one of its own terms — and
gets it in `grads`' `term_grads`: one more pull-back of the same forward pass per name, nothing
when the tuple is empty.

A stage that owns trainables (an adversary) keeps them and their optax state in its stage state,
differentiates its own objective inside `loss` (on `stop_gradient` of the model's outputs), returns
those gradient *sums* in `stats` (so they add up over microbatches and replicas like the model's)
and applies them in `update`. If the step's update is not finite, the whole new state, stage states
included, is discarded: a stage never learns from a skipped step.

Each stage has a unique `name` (its config section's), which keys its state (`TrainState.
stage_states[name]`), its randomness (`stage_key`), its metrics (`name/<metric>`) and its emits.
Stage kinds register with `register_stage`, so `--set stages=KIND` builds them from the config.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable, Sequence

import jax
from jax.sharding import PartitionSpec as P

from holo_jax.config import STAGE_CONFIGS, StageConfig, register_stage_config
from holo_jax.errors import HoloError
from holo_jax.train.stats import Stat

PyTree = Any

# Names the step itself reports; a stage may not take one (its metrics are prefixed anyway).
RESERVED_NAMES = frozenset({"task", "loss", "total_loss", "grad_norm", "learning_rate", "param_norm", "finite",
                            "skipped_steps", "tokens_per_second", "step"})


class Stage:
    """Base class with pass-through hooks. Subclasses override what they need."""

    name: str = ""
    # Names of loss terms whose gradient this stage needs apart from the total: "task" or its own.
    grad_terms: tuple[str, ...] = ()
    # Emit cadence in steps; 0: `emit` is never called and adds nothing to the compiled step.
    emit_every: int = 0

    def bind_task(self, task: Any) -> None:
        """Called once with the run's task before anything is built: a stage that depends on what
        the task's batches hold (e.g. its identity columns) takes it from there, or refuses a task
        it cannot serve in one sentence."""

    def init(self, key: jax.Array, params: PyTree) -> PyTree:
        """This stage's own state (its trainable parameters, optimizer state, residuals ...)."""
        return ()

    def partition_specs(self, abstract_state: PyTree, param_specs: PyTree) -> PyTree:
        """Logical PartitionSpecs for `init`'s output; replicated unless overridden. A stage whose
        state mirrors the parameters (e.g. a residual) returns `param_specs` for that part."""
        return jax.tree.map(lambda _: P(), abstract_state)

    def loss(self, params: PyTree, stage_state: PyTree, batch: dict, outputs: dict, key: jax.Array
             ) -> tuple[dict[str, Stat], PyTree]:
        return {}, {}

    def grads(self, grads: PyTree, term_grads: dict[str, PyTree], stage_state: PyTree, stats: PyTree,
              key: jax.Array) -> tuple[PyTree, PyTree]:
        return grads, stage_state

    def update(self, stage_state: PyTree, stats: PyTree, key: jax.Array) -> PyTree:
        return stage_state

    def metrics(self, stage_state: PyTree, stats: PyTree) -> dict[str, jax.Array]:
        return {}

    def emit(self, stage_state: PyTree, stats: PyTree) -> PyTree:
        return {}


def stage_key(key: jax.Array, stage_name: str, purpose: str) -> jax.Array:
    """Randomness for `purpose` ("init", "loss", "grads", "update") of the stage called `stage_name`:
    named, so adding, removing or reordering other stages changes nothing for this one."""
    return jax.random.fold_in(key, zlib.crc32(f"{stage_name}/{purpose}".encode()) & 0x7FFFFFFF)


def check_stages(stages: Sequence[Stage]) -> tuple[Stage, ...]:
    """The stages as a tuple, after checking names are unique, usable and not reserved."""
    seen: set[str] = set()
    for stage in stages:
        name = stage.name
        if not name or "/" in name or name in RESERVED_NAMES:
            raise HoloError(f"stage name `{name}` is not usable: give each stage a non-empty name without `/` "
                            f"other than {', '.join(sorted(RESERVED_NAMES))}.")
        if name in seen:
            raise HoloError(f"two stages are named `{name}`; stage names key their state and metrics, "
                            f"so give the second one its own name (--set stages=KIND:OTHER_NAME).")
        seen.add(name)
        if stage.emit_every < 0:
            raise HoloError(f"stage `{name}`: emit_every must be 0 (never) or a number of steps, got {stage.emit_every}.")
    return tuple(stages)


# kind -> factory(settings) -> Stage
_FACTORIES: dict[str, Callable[[StageConfig], Stage]] = {}


def register_stage(config_cls: type[StageConfig]) -> Callable[[Callable[[StageConfig], Stage]], Callable]:
    """Decorator for a factory building a stage from its settings section `config_cls` (a
    StageConfig subclass with a `kind`); registers both, so `--set stages=KIND` works."""

    def register(factory: Callable[[StageConfig], Stage]) -> Callable[[StageConfig], Stage]:
        register_stage_config(config_cls)
        _FACTORIES[config_cls.kind] = factory
        return factory

    return register


def build_stages(configs: Sequence[StageConfig], task: Any = None) -> tuple[Stage, ...]:
    """The stages the config's `stages` sections describe, in order, each named after its section
    and bound to `task` (see `Stage.bind_task`)."""
    stages = []
    for cfg in configs:
        if cfg.kind not in _FACTORIES:
            known = ", ".join(sorted(STAGE_CONFIGS)) or "none are registered"
            raise HoloError(f"stage kind `{cfg.kind}` has no registered implementation; known kinds: {known}.")
        stage = _FACTORIES[cfg.kind](cfg)
        stage.name = cfg.stage_name
        if task is not None:
            stage.bind_task(task)
        stages.append(stage)
    return check_stages(stages)
