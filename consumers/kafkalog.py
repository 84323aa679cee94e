"""librdkafka's log lines and errors through the project's logging, repeats rate-limited, and
one WARNING when no broker has been reachable for longer than ``warn_after`` seconds.

librdkafka reports an unreachable broker on every reconnect attempt, twice (a log line and
an error callback), tens of times a second, and says nothing that stands out. Here:

- its log lines (the ``logger`` setting) and its errors (``error_cb``) go to the logger
  ``recs.kafka``; a line that repeats (same text once digits are ignored) is logged at most
  once per ``window`` seconds, the next one saying how many were left out. So the log rate
  is bounded by the number of distinct lines, whatever the reconnect rate;
- its statistics (``stats_cb``, every ``statistics.interval.ms``) say whether any broker
  connection is up. When none has been since start or since the last one went down for
  ``warn_after`` seconds: a WARNING, repeated every ``warn_after`` while it lasts, and an
  INFO line once a broker is back.

librdkafka hands all three to Python only inside ``poll``/``consume``/``flush``, on the
calling thread, so the state here needs no lock. Secrets in any line are masked by the log
formatter (core/logs.py).
"""

from __future__ import annotations

import logging
import re
import time

import orjson

log = logging.getLogger("recs.kafka")

_DIGITS = re.compile(r"\d+")
# librdkafka's FAIL lines repeat what error_cb reports (connection refused, resolve failed):
# kept for DEBUG, so a refused connection is one rate-limited INFO line, not two.
_DUPLICATE_FACILITIES = {"FAIL"}


class RateLimited:
    """Logs each distinct line at most once per ``window`` seconds; counts what it drops."""

    def __init__(self, logger: logging.Logger, window: float = 10.0, clock=time.monotonic) -> None:
        self.logger, self.window, self.clock = logger, window, clock
        self._last: dict[tuple[int, str], tuple[float, int]] = {}  # key -> (logged at, dropped)

    def log(self, level: int, text: str, fields: dict | None = None) -> None:
        if not self.logger.isEnabledFor(level):
            return
        key = (level, _DIGITS.sub("#", text))
        now = self.clock()
        logged_at, dropped = self._last.get(key, (None, 0))
        if logged_at is not None and now - logged_at < self.window:
            self._last[key] = (logged_at, dropped + 1)
            return
        if len(self._last) > 1000:  # distinct texts are few; never let the table grow
            self._last.clear()
        self._last[key] = (now, 0)
        out = dict(fields or {})
        if dropped:
            out["repeated"] = dropped
            out["within_s"] = round(now - logged_at, 1)
        self.logger.log(level, text, extra={"fields": out} if out else None)


class KafkaLog:
    """The ``logger``/``error_cb``/``stats_cb`` of one librdkafka client (see the module
    docstring). ``settings(extra)`` gives the config entries to add to the client's."""

    def __init__(self, client: str, warn_after: float | None = 30.0, window: float = 10.0,
                 clock=time.monotonic) -> None:
        self.client, self.warn_after, self.clock = client, warn_after, clock
        self.lines = RateLimited(log, window, clock)
        self.down_since: float | None = clock()  # no broker seen yet
        self._warned_at: float | None = None

    def settings(self, extra: dict) -> dict:
        """Entries for the client's config; ``extra`` (the user's settings) may set
        ``statistics.interval.ms`` itself (0 turns the unreachable-broker warning off)."""
        out = {"logger": self, "error_cb": self.on_error}
        if self.warn_after:
            out["stats_cb"] = self.on_stats
            if "statistics.interval.ms" not in extra:
                # Often enough that the warning comes at most a quarter late.
                out["statistics.interval.ms"] = int(max(100, min(5000, self.warn_after * 250)))
        return out

    # -- librdkafka's callbacks --------------------------------------------------------------
    def log(self, level: int, fmt: str, *args) -> None:
        """The ``logger`` interface confluent_kafka calls: (level, "%s [%s] %s", fac, name, msg)."""
        if len(args) == 3:
            facility, _name, text = args
        else:
            facility, text = "", (fmt % args if args else fmt)
        if facility in _DUPLICATE_FACILITIES:
            level = min(level, logging.DEBUG)
        self.lines.log(level, f"librdkafka {facility}: {text}", {"client": self.client})
        self._check()

    def on_error(self, err) -> None:
        if err.fatal():
            log.error("fatal kafka error", extra={"fields": {"client": self.client,
                                                             "error": str(err)}})
        else:
            self.lines.log(logging.INFO, f"kafka: {err.str()}",
                           {"client": self.client, "code": err.name()})
        self._check()

    def on_stats(self, stats_json: str) -> None:
        try:
            brokers = orjson.loads(stats_json).get("brokers", {})
        except orjson.JSONDecodeError:
            return
        up = any(b.get("state") == "UP" for b in brokers.values())
        now = self.clock()
        if up and self.down_since is not None:
            if self._warned_at is not None:
                log.info("a Kafka broker is reachable again", extra={"fields": {
                    "client": self.client, "after_s": round(now - self.down_since, 1)}})
            self.down_since = self._warned_at = None
        elif not up and self.down_since is None:
            self.down_since = now
        self._check()

    def _check(self) -> None:
        if self.down_since is None or not self.warn_after:
            return
        now = self.clock()
        if now - self.down_since < self.warn_after:
            return
        if self._warned_at is not None and now - self._warned_at < self.warn_after:
            return
        self._warned_at = now
        log.warning("no Kafka broker reachable", extra={"fields": {
            "client": self.client, "for_s": round(now - self.down_since, 1),
            "warn_after_s": self.warn_after}})
