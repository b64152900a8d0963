"""User-facing errors.

A `HoloError` carries one sentence that says what is wrong and what to do about it.
Command-line entry points catch it and print only that sentence (no traceback), so bad
input never shows up as a wall of XLA internals.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class HoloError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


def exit_on_user_error(main: Callable[..., T], *, hard_exit: bool = False) -> Callable[..., T]:
    """Wrap a CLI `main` so a `HoloError` prints `error: <sentence>` and exits with status 2.

    `hard_exit` skips interpreter teardown (for entry points that touch orbax, see below)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except HoloError as e:
            # `print_to`: where stderr was before something redirected it (see checkpoint.py).
            print(f"error: {e}", file=getattr(e, "print_to", None) or sys.stderr, flush=True)
            if not hard_exit:
                raise SystemExit(2) from None
            sys.stdout.flush()
            # Exit without interpreter teardown: after a failed checkpoint read, tensorstore's
            # reader threads still call back into orbax's closed asyncio loop (their tracebacks
            # go to the restore log). Our own files are closed or fsynced by now (context
            # managers, EventLog), so there is nothing left to flush.
            os._exit(2)

    return wrapped
