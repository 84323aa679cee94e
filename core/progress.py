"""Progress of a long step: a bar on a terminal, a log line every ``interval`` seconds
otherwise (a service's log, a CI job), so an operator can tell a slow run from a stuck one.

``Progress(label, total)`` is a callable taking "units done so far"; ``close()`` ends the
bar (or logs the final line). Drawing is throttled: calling it per batch costs nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("core.progress")

BAR_WIDTH = 30


class Progress:
    """Report ``done`` of ``total`` units of one step."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None,
                 interval: float = 10.0, tty: bool | None = None) -> None:
        self.label, self.total = label, max(int(total), 0)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if not self.tty else 0.2
        self.started = time.monotonic()
        self._shown_at = -float("inf")
        self.done = 0

    def __call__(self, done: int) -> None:
        self.done = min(int(done), self.total) if self.total else int(done)
        now = time.monotonic()
        if now - self._shown_at >= self.interval:
            self._shown_at = now
            self._show(final=False)

    def close(self) -> None:
        self._show(final=True)

    def line(self) -> str:
        """``label: 1,234/5,000 users (25%), 12 s`` (the text both forms show)."""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        seconds = time.monotonic() - self.started
        return f"{self.label}: {self.done:,}/{self.total:,}{share}, {seconds:.0f} s"

    def _show(self, final: bool) -> None:
        if not self.tty:
            log.info(self.line(), extra={"fields": {"step": self.label, "done": self.done,
                                                    "total": self.total}})
            return
        filled = int(BAR_WIDTH * self.done / self.total) if self.total else BAR_WIDTH
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {self.line()}" + ("\n" if final else ""))
        self.stream.flush()
