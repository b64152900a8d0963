"""Progress on the console: a tqdm bar on a terminal, a plain line every few seconds elsewhere.

In a non-interactive log (CI, `srun`, `nohup`) a bar's carriage returns make one endless line
(the 300-step Quickstart wrote a single 25.7 KB line), so there each update is a short line of
its own, at most one per `every_seconds`, plus the last one.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, enabled: bool, start: int, total: int, *, stream: TextIO | None = None,
                 every_seconds: float = 10.0, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.total, self.step = total, start
        self._bar = None
        self._enabled = enabled
        self._every, self._clock = every_seconds, clock
        self._last_line = clock()
        self._fields = ""
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, mininterval=1.0,
                             file=self.stream)

    def update(self, step: int, **fields: float) -> None:
        self.step = step
        self._fields = " ".join(f"{k}={v}" for k, v in fields.items())
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix_str(self._fields, refresh=False)
            return
        now = self._clock()
        if now - self._last_line >= self._every or step == self.total:
            self._last_line = now
            self._line()

    def _line(self) -> None:
        print(f"step {self.step}/{self.total} {self._fields}".rstrip(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._enabled and self.step != self.total and self._fields:
            self._line()  # where a stopped run ended
