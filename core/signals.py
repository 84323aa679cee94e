"""The warm stop every long-running command shares: the first SIGTERM/SIGINT asks it to
finish what it holds and stop; a second one stops it at once."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

log = logging.getLogger("core.signals")


class StopFlag:
    """Polled by a service loop; safe to set from a signal handler.

    ``threading.Event.set()`` takes a lock that ``Event.wait()`` in the interrupted main
    thread may hold at that instant: a signal handler calling it can deadlock the process.
    This flag is a plain attribute, and :meth:`wait` sleeps in short slices instead."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not self._set and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
        return self._set


def exit_now(signum: int) -> None:
    """The default second signal: flush the logs and leave without cleanup (the services'
    state in Redis is safe at any instant; see each service's docstring for why)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(128 + signum)


def on_stop_signals(first: Callable[[str], None], second: Callable[[int], None] = exit_now
                    ) -> Callable[[], None]:
    """Route SIGTERM and SIGINT: the first to ``first(signal name)``, any later one to
    ``second(signum)``. Returns a function that puts the previous handlers back. Outside the
    main thread (a command run in-process by a test) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    seen = StopFlag()

    def handle(signum, _frame) -> None:
        name = signal.Signals(signum).name
        if seen.is_set():
            log.warning("second signal: stopping now", extra={"fields": {"signal": name}})
            second(signum)
            return
        seen.set()
        first(name)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
