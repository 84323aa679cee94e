"""Iterating in a background thread, a few items ahead: a producer (numpy work, which
releases the GIL) overlaps with a consumer that waits on I/O (``store.publish`` scores while it
waits on Redis)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator


def prefetched(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead.

    The publisher's producer scores (numpy, which releases the GIL) and builds script
    arguments while the consuming thread waits on Redis, so Redis is never idle waiting for
    the client. An exception in the producer is raised in the consumer; a consumer that
    stops early stops the producer."""
    out: queue.Queue = queue.Queue(depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    thread = threading.Thread(target=produce, name="publish-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
