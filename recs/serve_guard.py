"""What keeps ``recs serve`` standing under load and hostile clients, below the routes.

uvicorn's own knobs do most of it (``limit_concurrency``: a 503 past the connection cap;
``h11_max_incomplete_event_size``: a request head over 16 KiB is a 400; ``timeout_keep_alive``:
idle keep-alive connections close). What uvicorn has no knob for is here:

- :class:`GuardedH11` (uvicorn's h11 protocol, subclassed): a request head must arrive
  whole within ``header_timeout`` seconds of the connection opening (or of its first byte
  after a response), else the connection is closed: a client trickling header lines cannot
  hold a socket. A connection past the cap is answered 503 and closed as it is accepted,
  so idle sockets never reach the open-file limit (uvicorn's cap acts only once a request
  arrives); and a request head past ``max_head`` bytes is a 400 however it arrives (h11's
  limit counts only what it buffers between reads);
- :func:`open_file_budget`: the soft open-file limit raised to the hard one, and the
  connection cap lowered to what the limit leaves after the Redis pool and a margin;
- :class:`RateLimited`: a log filter that lets each message through a few times a minute
  and counts the rest, so a flood (bad requests, wrong tokens, accept errors) cannot fill
  the disk;
- :class:`Throttle`: wrong tokens per client address; past the limit every request with a
  token from that address gets 429 until the window has passed.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict, deque

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("recs.serve")

_BUSY_BODY = b'{"error":"busy","detail":"too many connections: retry shortly"}'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
        + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)
FILE_MARGIN = 64
"""Open files kept for everything but client sockets (logs, static files, Kafka)."""


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a cap applied at accept time
    (module docstring). ``guarded(header_timeout, cap)`` makes the class uvicorn is given."""

    header_timeout: float = 10.0
    cap: int = 2048
    max_head: int = 16 * 1024

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        super().connection_made(transport)
        if len(self.connections) > self.cap:
            log.warning("connection refused: at the connection cap",
                        extra={"fields": {"cap": self.cap}})
            transport.write(BUSY)
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            # h11's own limit only counts what it buffers between reads; a head read whole
            # in one go (up to 256 KiB) would pass it.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head and not self.transport.is_closing():
                self.send_400_response("Request head too large.")
                return
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._arm()  # part of a head: the deadline runs from its first byte
        else:
            self._head_bytes = 0
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("connection closed: no whole request head in time",
                     extra={"fields": {"seconds": self.header_timeout}})
            self.transport.close()


def guarded(header_timeout: float, cap: int, max_head: int) -> type[GuardedH11]:
    """A :class:`GuardedH11` with these limits (uvicorn takes a protocol class)."""
    return type("RecsH11", (GuardedH11,), {"header_timeout": header_timeout, "cap": cap,
                                           "max_head": max_head})


def open_file_budget(wanted: int, reserved: int) -> int:
    """Raise the soft open-file limit to the hard one; return the connection cap that fits
    under it (``wanted`` at most) after ``reserved`` files (the Redis pool) and a margin."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(1, min(wanted, soft - reserved - FILE_MARGIN))


class RateLimited(logging.Filter):
    """At most ``burst`` records per logger and message template each ``window`` seconds;
    the first one let through afterwards carries ``suppressed``: how many were dropped."""

    def __init__(self, burst: int = 10, window: float = 60.0, max_keys: int = 1000) -> None:
        super().__init__()
        self.burst, self.window, self.max_keys = burst, window, max_keys
        self._seen: OrderedDict[tuple, list] = OrderedDict()  # key -> [start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        state = self._seen.get(key)
        if state is None or now - state[0] >= self.window:
            dropped = state[2] if state else 0
            state = self._seen[key] = [now, 0, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
            if dropped:
                record.fields = {**(getattr(record, "fields", None) or {}),
                                 "suppressed": dropped}
        if state[1] >= self.burst:
            state[2] += 1
            return False
        state[1] += 1
        return True


class Throttle:
    """Wrong tokens per client address: ``limit`` within ``window`` seconds, then every
    request with a token from that address is refused until the oldest failure ages out.
    At most ``max_addresses`` are remembered (the oldest forgotten first)."""

    def __init__(self, limit: int = 10, window: float = 60.0,
                 max_addresses: int = 10000) -> None:
        self.limit, self.window, self.max_addresses = limit, window, max_addresses
        self._failures: OrderedDict[str, deque] = OrderedDict()

    def wait(self, address: str) -> float:
        """Seconds before ``address`` may try a token again (0: now)."""
        failures = self._failures.get(address)
        if failures is None:
            return 0.0
        now = time.monotonic()
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return 0.0
        return self.window - (now - failures[0]) if len(failures) >= self.limit else 0.0

    def failed(self, address: str) -> None:
        failures = self._failures.setdefault(address, deque(maxlen=self.limit))
        failures.append(time.monotonic())
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
