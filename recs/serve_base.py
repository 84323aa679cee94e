"""What ``recs serve``'s modules share (recs/serve.py, serve_page.py, serve_openapi.py): its
settings, the error every route answers with, JSON responses and the rendering of a list.
Imported by those modules, importing none of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from starlette.responses import Response

MAX_N = 100
"""The longest list one request may ask for (published lists hold ``--top-n``, 20)."""
API_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
"""Headers of every API answer: never cached, never sniffed."""


@dataclass(frozen=True)
class ServeConfig:
    """What ``recs serve`` needs besides its address."""

    redis_url: str = "redis://localhost:6379/0"
    """Where the published lists are."""
    prefix: str = "recs"
    """Key prefix, as for every other command."""
    token: str | None = None
    """Bearer token required by every route but /healthz; None or '' = open (and no user
    look-ups on the page, since views are personal data)."""
    redis_timeout: float = 2.0
    """Seconds before a Redis call gives up (and the request gets a 503)."""
    redis_connections: int = 64
    """Redis connections in the pool; requests beyond them wait for one."""
    redis_wait: float = 10.0
    """Seconds a request waits for a free Redis connection when every one is busy (load,
    not an outage) before it gets 503 ``busy``."""
    max_connections: int = 2048
    """Client connections held at once; past it, requests get 503 and new connections are
    answered 503 and closed at once (also lowered to fit the open-file limit)."""
    header_timeout: float = 10.0
    """Seconds a client has to send a whole request head (and a login form's body)."""
    kafka_bootstrap_servers: str = ""
    """Kafka to ask for end offsets, so the page shows the consumer's lag; '' = off (the
    page then shows the time since the last applied batch of views)."""
    topic: str = "resource-views"
    """The views topic the consumer reads."""
    group: str = "recs"
    """The consumer group whose applied offsets Redis holds."""
    kafka_config: tuple[tuple[str, str], ...] = ()
    """Extra librdkafka settings (security), as for ``recs consume``."""


class ApiError(Exception):
    """A request we answer with ``status`` and ``{"error": error, "detail": detail}``."""

    def __init__(self, status: int, error: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or {}


class JSON(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, error: str, detail: str,
                   headers: dict[str, str] | None = None) -> JSON:
    return JSON({"error": error, "detail": detail}, status_code=status,
                headers={**API_HEADERS, **(headers or {})})


def rendered(listed) -> list[dict]:
    """A ``store.aclient.Listed`` as JSON objects, with details where they are loaded."""
    out = []
    for rid, score in listed.items:
        item = {"resource_id": rid, "score": round(score, 6)}
        item.update(listed.details.get(rid) or {})
        out.append(item)
    return out


def age_seconds(trained_at) -> float | None:
    try:
        when = datetime.fromisoformat(str(trained_at).replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round((datetime.now(UTC) - when).total_seconds(), 1)
