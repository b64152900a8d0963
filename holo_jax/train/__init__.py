"""Training: tasks, stages and the pure step built from them, the train state, checkpoints, sinks
and the host loop."""
from holo_jax.train.sinks import CompositeSink, Sink
from holo_jax.train.stages import Stage, build_stages, register_stage
from holo_jax.train.state import TrainState, init_train_state
from holo_jax.train.stats import Stat
from holo_jax.train.step import jit_train_step, make_eval_step, make_train_step
from holo_jax.train.tasks import NextTokenLM, SequenceClassification, Task, make_task

__all__ = [
    "CompositeSink", "NextTokenLM", "SequenceClassification", "Sink", "Stage", "Stat", "Task", "TrainState",
    "build_stages", "init_train_state", "jit_train_step", "make_eval_step", "make_task", "make_train_step",
    "register_stage",
]
