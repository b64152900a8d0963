"""Checkpoints through orbax's CheckpointManager: periodic async saves, keep the last K, resume.

One checkpoint holds two items: `state` (the whole TrainState, sharded as in training) and
`data` (the input pipeline's per-row position, laid out as global arrays sharded like the batch,
so every process saves and restores exactly its own rows). Orbax writes each step to a
temporary directory and renames it when complete, so a crash mid-save never leaves a
checkpoint that looks finished; the previous ones stay untouched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from holo_jax.config import CheckpointConfig
from holo_jax.errors import HoloError

PyTree = Any


class Checkpointer:
    def __init__(self, directory: str | Path, cfg: CheckpointConfig):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            # Exactly every N steps (orbax would otherwise also save the first step it sees).
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(max(cfg.every_steps, 1)),
            max_to_keep=cfg.keep,
            enable_async_checkpointing=cfg.async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def due(self, step: int) -> bool:
        """Whether `step` is on the save interval (and not already saved)."""
        return self._manager.should_save(step)

    def save(self, step: int, state: PyTree, data_state: PyTree, *, force: bool = False) -> bool:
        """Save if `step` is on the save interval (or `force`); returns whether a save started."""
        return self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.StandardSave(data_state)),
            force=force,
        )

    def restore(self, step: int, abstract_state: PyTree, abstract_data: PyTree) -> tuple[PyTree, PyTree]:
        """Restore into the shardings carried by the abstract targets (ShapeDtypeStructs)."""
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.StandardRestore(abstract_data)
                ),
            )
        except Exception as e:  # orbax raises many types (ValueError, FileNotFoundError, tensorstore errors)
            reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise HoloError(
                f"the checkpoint for step {step} in {self.directory} cannot be restored ({reason}); "
                f"if it is damaged, move that step's directory aside to resume from the previous checkpoint "
                f"(steps present: {self.all_steps()}), or use a new --workdir."
            ) from e
        return restored["state"], restored["data"]

    def wait(self) -> None:
        """Block until pending async saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
