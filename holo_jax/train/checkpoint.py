"""Checkpoints through orbax's CheckpointManager: periodic async saves, keep the last K, resume.

One checkpoint holds two items: `state` (the whole TrainState, sharded as in training) and
`data` (the input pipeline's per-row position, laid out as global arrays sharded like the batch,
so every process saves and restores exactly its own rows). Orbax writes each step to a
temporary directory and renames it when complete, so a crash mid-save never leaves a
checkpoint that looks finished; the previous ones stay untouched.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import jax
import orbax.checkpoint as ocp

from holo_jax.config import CheckpointConfig
from holo_jax.errors import HoloError

PyTree = Any


def _host_barriers_for_orbax() -> None:
    """Make orbax synchronise processes through the jax.distributed coordination service.

    By default orbax (0.12) syncs with `multihost_utils.sync_global_devices`, a device collective,
    and it does so from its async-save thread too. Device collectives are paired across processes
    by the order in which each process dispatches them, so one dispatched from a background thread
    can pair with the trainer's own collective (a train step, the preemption flags' all-gather) on
    another process: seen here as a 2-process run that hung at its first save, one process in the
    all-gather, the other already done. The coordination-service barrier is keyed by name and
    safe from any thread (orbax's `get_barrier_sync_fn` docstring says so)."""
    from absl import flags

    flag = flags.FLAGS["experimental_orbax_use_distributed_barrier"]
    flag.value = True
    flag.present = 1  # readable although absl never parsed a command line here


class Checkpointer:
    def __init__(self, directory: str | Path, cfg: CheckpointConfig):
        self.directory = Path(directory).absolute()
        if jax.process_count() > 1:
            _host_barriers_for_orbax()
        options = ocp.CheckpointManagerOptions(
            # Exactly every N steps (orbax would otherwise also save the first step it sees).
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(max(cfg.every_steps, 1)),
            max_to_keep=cfg.keep,
            enable_async_checkpointing=cfg.async_save,
            create=True,
        )
        self._failed_restore = False
        self._redirect: _Redirect | None = None
        self._uncommitted: list[int] = []  # saves started whose files may not all be on disk yet
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def due(self, step: int) -> bool:
        """Whether `step` is on the save interval (and not already saved)."""
        return self._manager.should_save(step)

    def save(self, step: int, state: PyTree, data_state: PyTree, *, force: bool = False) -> bool:
        """Save if `step` is on the save interval (or `force`); returns whether a save started.
        With async saving the files are written in the background: `committed()` reports when."""
        started = self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.StandardSave(data_state)),
            force=force,
        )
        if started:
            self._uncommitted.append(step)
        return started

    def committed(self) -> list[int]:
        """Steps whose save has finished (renamed into place) since the last call. Events and
        audit records say a checkpoint exists only once it does, so a crash in between never
        leaves a record of a step that cannot be restored."""
        if not self._uncommitted or self._manager.is_saving_in_progress():
            return []
        done, self._uncommitted = self._uncommitted, []
        return done

    def restore(self, step: int, abstract_state: PyTree, abstract_data: PyTree) -> tuple[PyTree, PyTree]:
        """Restore into the shardings carried by the abstract targets (ShapeDtypeStructs)."""
        log = self.directory.parent / "restore_errors.log"
        try:
            # A damaged checkpoint makes tensorstore's reader threads print tracebacks (while
            # and after the restore fails); they go to a log file instead of burying the
            # one-sentence error, which goes to the original stderr.
            with _stderr_to(log) as redirect:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.StandardRestore(abstract_data)
                    ),
                )
        except Exception as e:  # orbax raises many types (ValueError, FileNotFoundError, tensorstore errors)
            # Leave the manager open: reads still in flight call back into orbax's event loop.
            # Their late tracebacks keep going to the log until `close()` gives stderr back.
            self._failed_restore, self._redirect = True, redirect
            reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            if "shape" in str(e).lower():
                # The resume check compared the whole config, so the arrays can only differ if the
                # run record (config.json) does not describe this checkpoint, or the code changed.
                error = HoloError(
                    f"the checkpoint for step {step} in {self.directory} holds arrays of other shapes than this "
                    f"run builds ({reason}); it was written with other model, task or stage settings than "
                    f"config.json records, or by other code: resume with the settings it was written with, "
                    f"or use a new --workdir (details: {log}).")
            else:
                error = HoloError(
                    f"the checkpoint for step {step} in {self.directory} cannot be restored ({reason}); "
                    f"if it is damaged, move that step's directory aside to resume from the previous checkpoint "
                    f"(steps present: {self.all_steps()}), or use a new --workdir (details: {log})."
                )
            error.print_to = redirect.original
            raise error from e
        _drop_if_empty(log)  # nothing went wrong: leave no empty error log behind
        return restored["state"], restored["data"]

    def wait(self) -> None:
        """Block until pending async saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        if not self._failed_restore:
            self._manager.close()
        elif self._redirect is not None:
            # A library or notebook caller gets its stderr back once the trainer returns.
            self._redirect.restore(self.directory.parent / "restore_errors.log")
            self._redirect = None


def finished_steps(directory: str | Path) -> list[int]:
    """The steps with a finished checkpoint under `directory`, ascending; [] when it does not exist.
    Reads the directory only (no manager, nothing created), so it can run before a run decides
    whether it starts fresh or resumes."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    try:
        return sorted(ocp.utils.checkpoint_steps(directory))
    except (OSError, ValueError):  # an unreadable directory, or entries orbax cannot name
        return []


def restore_params(directory: str | Path, step: int, wanted: PyTree, log: Path) -> PyTree:
    """The subtree `wanted` of the parameters saved at `step` under `directory` (another run's
    checkpoints), and nothing else: no optimizer or stage state, no data position, which would
    only fit the run that wrote them. `wanted` is a nested dict of ShapeDtypeStructs carrying the
    shardings to restore into (any mesh: orbax reshards). Opens the directory read-only (nothing
    is created, saved or pruned there); tensorstore's tracebacks for a damaged checkpoint go to
    `log`, and the failure is one HoloError sentence."""
    import logging

    directory = Path(directory).absolute()
    if jax.process_count() > 1:
        _host_barriers_for_orbax()
    # Orbax logs a warning for every read-only manager, which is the point here, not news.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0),
            item_names=("state", "data"))
    finally:
        absl_logger.setLevel(level)
    target = {"params": wanted}
    try:
        with _stderr_to(log) as redirect:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True)))
    except Exception as e:  # orbax raises many types (ValueError, FileNotFoundError, tensorstore errors)
        # Leave the manager open: reads still in flight call back into its event loop (see
        # Checkpointer.restore); stderr comes back, their late tracebacks keep going to the log.
        redirect.restore(log)
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise HoloError(f"the checkpoint for step {step} in {directory} cannot be read ({reason}); if it is "
                        f"damaged, move that step's directory aside to start from the previous checkpoint "
                        f"(steps present: {finished_steps(directory)}; details: {log}).") from e
    manager.close()
    _drop_if_empty(log)
    return restored["state"]["params"]


def _drop_if_empty(log: Path) -> None:
    """Remove an empty error log. Every process of a multi-process run restores with the same log
    path in the shared workdir, so another process may have removed it first: not an error."""
    try:
        if log.stat().st_size == 0:
            log.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


class _Redirect:
    original: TextIO | None = None  # the stderr from before, once the block has raised
    saved_fd: int | None = None

    def restore(self, log: Path | None = None) -> None:
        """Point fd 2 back at the stderr from before (after a block that raised). Tensorstore's
        reader threads may still fail later, calling into orbax's closed event loop; Python reports
        those through `sys.unraisablehook`, which from now on sends exactly those to `log`."""
        if self.saved_fd is None:
            return
        if log is not None:
            _late_loop_errors_to(log)
            # The reader threads also print whole tracebacks through `sys.stderr` (natively, not
            # through the hook). One caught mid-print by the switch below would put its tail on
            # the real stderr, before the run's one-sentence error (seen in CI). So Python-level
            # writes from any thread but the main one go on to the log from here, and the switch
            # waits a moment for a print already under way to finish.
            old = sys.stderr
            sys.stderr = _MainThreadOnly(os.fdopen(os.dup(self.saved_fd), "w", buffering=1),
                                         open(log, "a", encoding="utf-8", buffering=1))
            time.sleep(0.05)
            old.flush()
        sys.stderr.flush()
        os.dup2(self.saved_fd, 2)
        os.close(self.saved_fd)
        self.saved_fd = None


class _MainThreadOnly(io.TextIOBase):
    """A stderr whose writes from the main thread go to `main` and from other threads to `others`."""

    def __init__(self, main: TextIO, others: TextIO):
        self._main, self._others = main, others

    def _target(self) -> TextIO:
        return self._main if threading.current_thread() is threading.main_thread() else self._others

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._main.flush()
        self._others.flush()

    def fileno(self) -> int:
        return self._main.fileno()

    def isatty(self) -> bool:
        return self._main.isatty()

    @property
    def encoding(self) -> str:
        return self._main.encoding


def _late_loop_errors_to(log: Path) -> None:
    previous = sys.unraisablehook

    def hook(unraisable):
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            import traceback

            with open(log, "a", encoding="utf-8") as f:
                traceback.print_exception(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback, file=f)
            return
        previous(unraisable)

    sys.unraisablehook = hook


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[_Redirect]:
    """Send file descriptor 2 (what `sys.stderr` and native code write to) to `path` for the
    block. If the block raises, it stays there for good, late writers included, and the yielded
    object's `original` is a stream on the stderr from before, for the error message."""
    sys.stderr.flush()
    saved = os.dup(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(target, 2)
    os.close(target)
    redirect = _Redirect()
    try:
        yield redirect
    except BaseException:
        redirect.saved_fd = saved
        redirect.original = os.fdopen(os.dup(saved), "w", buffering=1)
        raise
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
