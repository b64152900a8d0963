"""User-facing errors.

A `HoloError` carries one sentence that says what is wrong and what to do about it.
Command-line entry points catch it and print only that sentence (no traceback), so bad
input never shows up as a wall of XLA internals.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TextIO, TypeVar

T = TypeVar("T")


class HoloError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""

    # Where the sentence goes if not to `sys.stderr`: set by code that has redirected stderr
    # and must leave it redirected (a failed checkpoint restore, see train/checkpoint.py).
    print_to: TextIO | None = None


def exit_on_user_error(main: Callable[..., T], *, hard_exit: bool = False) -> Callable[..., T]:
    """Wrap a CLI `main` so a `HoloError` prints `error: <sentence>` and exits with status 2.

    `hard_exit` skips interpreter teardown (for entry points that touch orbax, see below)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except HoloError as e:
            print(f"error: {e}", file=e.print_to or sys.stderr, flush=True)
            if not hard_exit:
                raise SystemExit(2) from None
            sys.stdout.flush()
            # Exit without interpreter teardown: after a failed checkpoint read, tensorstore's
            # reader threads still call back into orbax's closed asyncio loop (their tracebacks
            # go to the restore log). Our own files are closed or fsynced by now (context
            # managers, the sinks' fsynced JSONL files), so there is nothing left to flush.
            os._exit(2)

    return wrapped
