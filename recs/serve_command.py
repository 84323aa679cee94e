"""``recs serve`` as a command: the app of recs/serve.py on uvicorn, with the limits of
recs/serve_guard.py, stopped warm by the first SIGTERM/SIGINT and at once by a second."""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette

from recs.serve import KEEP_ALIVE_SECONDS, MAX_HEAD_BYTES, create_app
from recs.serve_base import ServeConfig

log = logging.getLogger("recs.serve")


def server_config(app: Starlette, config: ServeConfig, host: str, port: int):
    """uvicorn's settings for ``app``: its own knobs for the connection cap, the request
    head size and idle keep-alive, and recs.serve_guard's protocol for the rest (the
    request-head deadline, the cap enforced at accept time)."""
    import uvicorn

    from recs.serve_guard import guarded, open_file_budget

    cap = open_file_budget(config.max_connections, config.redis_connections)
    if cap < config.max_connections:
        log.warning("connection cap lowered to fit the open-file limit",
                    extra={"fields": {"max_connections": cap}})
    return uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, server_header=False,
        lifespan="on", http=guarded(config.header_timeout, cap, MAX_HEAD_BYTES),
        limit_concurrency=cap, h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_keep_alive=KEEP_ALIVE_SECONDS)


def cmd_serve(args) -> int:
    """``recs serve``: run the app on ``--host``/``--port``. The first SIGTERM/SIGINT lets
    requests in flight finish and exits 0, like every service; a second stops at once."""
    import uvicorn

    from core.signals import on_stop_signals
    from recs.serve_guard import RateLimited

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # ours, not uvicorn's (which re-raises the signal at exit)
            restore = on_stop_signals(lambda name: setattr(self, "should_exit", True))
            try:
                yield
            finally:
                restore()

    from core.options import parse_kafka_config
    from core.redact import register_secret

    register_secret(args.token)  # never in a log line, whatever quotes it
    for handler in logging.getLogger().handlers:  # a flood of one message cannot fill a disk
        handler.addFilter(RateLimited())
    config = ServeConfig(
        redis_url=args.redis_url, prefix=args.prefix, token=args.token or None,
        redis_connections=args.redis_connections, max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        kafka_bootstrap_servers=args.kafka_bootstrap_servers, topic=args.topic,
        group=args.group, kafka_config=tuple(parse_kafka_config(args.kafka_config).items()))
    log.info("serving", extra={"fields": {"host": args.host, "port": args.port,
                                          "token": "set" if config.token else "none"}})
    Server(server_config(create_app(config), config, args.host, args.port)).run()
    log.info("stopped")
    return 0
