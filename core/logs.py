"""Logging setup: readable lines for people, one JSON object per line for collectors.

Structured fields go in ``extra={"fields": {...}}``; both formats print them. Every line
passes through ``core.redact`` last, so no password reaches the log (a URL in a message, a
redis-py or librdkafka error quoting a setting, a traceback).
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

from core.redact import redact


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        # Before encoding too: JSON escapes would hide a secret holding a quote or backslash.
        doc = {k: redact(v) if isinstance(v, str) else v for k, v in doc.items()}
        return redact(orjson.dumps(doc, default=str).decode())


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return redact(line)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # librdkafka and urllib chatter is rarely what an operator wants at INFO.
    logging.getLogger("implicit").setLevel(logging.WARNING)
