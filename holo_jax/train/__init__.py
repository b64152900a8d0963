"""Training: the train state, stages, the pure step, checkpoints and the host loop."""
from holo_jax.train.stages import Stage
from holo_jax.train.state import TrainState, init_train_state
from holo_jax.train.step import make_eval_step, make_train_step, jit_train_step

__all__ = ["Stage", "TrainState", "init_train_state", "jit_train_step", "make_eval_step", "make_train_step"]
