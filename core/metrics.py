"""The one way a service exposes its Prometheus registry: a daemon thread on a given port
and address, 0 meaning no server, a busy port one clear error."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

from core.errors import InputError


def serve_metrics(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> None:
    """Expose ``registry`` at /metrics on ``addr:port`` (a daemon thread); 0 means no server."""
    if not port:
        return
    try:
        start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise InputError(f"metrics on {addr}:{port}: {exc.strerror or exc} (choose another "
                         "--metrics-port, 0 = off, or --metrics-address)") from None
