"""User-facing errors.

A `HoloError` carries one sentence that says what is wrong and what to do about it.
Command-line entry points catch it and print only that sentence (no traceback), so bad
input never shows up as a wall of XLA internals.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class HoloError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI `main` so a `HoloError` prints `error: <sentence>` and exits with status 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except HoloError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return wrapped
