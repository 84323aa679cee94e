"""``recs serve``: the published lists over HTTP for apps that do not speak Redis, and a page
for operators. Starlette on uvicorn; Redis through redis-py's asyncio client
(``store.aclient``, which shares its key rules and decoding with the synchronous client).

Starlette rather than FastAPI: FastAPI is Starlette plus pydantic validation and an OpenAPI
generator. Here a handful of read-only routes check their few inputs by hand (to give the
contract's own 4xx reasons, and to decode user ids from the raw path), so pydantic would be
a dependency and per-request work for nothing; the OpenAPI document is written out in
``recs.serve_openapi`` and a test holds it to the routes.

Endpoints (``/openapi.json`` describes them; ``recs.serve_openapi``):

- ``GET /v1/{lang}/resources/{id}/similar?n=10`` and
  ``GET /v1/{lang}/users/{user_id}/recommendations?n=10`` (``source``: personal, trending
  or none), ``GET /v1/{lang}/model``, ``GET /v1/{lang}/resources?q=TEXT`` (title search);
- ``GET /v1/{lang}/users/{user_id}/explain`` (views and the reasons behind each item:
  personal data, so only when a token is configured);
- ``GET /healthz`` (never needs the token), ``GET /metrics`` (Prometheus), ``GET /`` (page).

Invariants:
- a user id is ONE percent-encoded path segment, decoded from the raw request target (not
  from the server's decoded path), so ``/``, ``?``, ``%`` and any Unicode round-trip;
- bad input is a 4xx with ``{"error", "detail"}``; Redis unreachable is a 503 with the same
  shape; nothing a client sends produces a 500;
- with a token, every route but ``/healthz`` and the static files needs it, as
  ``Authorization: Bearer TOKEN`` or the page's cookie (set by ``POST /login``).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources as package_files
from urllib.parse import parse_qs, unquote_to_bytes

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from core.contract import CONTROL_CHARACTERS, MAX_RESOURCE_ID, MAX_USER_ID_LENGTH, valid_lang
from recs.serve_base import (
    JSON,
    MAX_N,
    ApiError,
    ServeConfig,
    age_seconds,
    error_response,
    rendered,
)
from store.aclient import AsyncRecsClient, connect_async
from store.keys import Keys

log = logging.getLogger("recs.serve")

COOKIE = "recs_token"
STATIC = {"page.js": "text/javascript", "page.css": "text/css",
          "favicon.svg": "image/svg+xml"}
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


# -- input -------------------------------------------------------------------------------------


def lang_of(segment: str) -> str:
    if not valid_lang(segment):
        raise ApiError(400, "bad_language",
                       f"{segment!r} is not a language code (2 or 3 lowercase letters)")
    return segment


def n_of(request: Request, default: int = 10) -> int:
    raw = request.query_params.get("n")
    if raw is None:
        return default
    if not (raw.isascii() and raw.strip().isdigit()) or not 1 <= int(raw) <= MAX_N:
        raise ApiError(400, "bad_n", f"n={raw!r}: expected an integer in 1..{MAX_N}")
    return int(raw)


def resource_id_of(segment: str) -> int:
    if not (segment.isascii() and segment.isdigit()) or not 1 <= int(segment) <= MAX_RESOURCE_ID:
        raise ApiError(400, "bad_resource_id",
                       f"{segment!r} is not a resource id (an integer in 1..{MAX_RESOURCE_ID})")
    return int(segment)


def raw_segments(request: Request) -> list[bytes]:
    """The request path split on ``/`` BEFORE percent-decoding (``%2F`` stays inside its
    segment). uvicorn passes the target as ``raw_path``; other servers may not."""
    raw = request.scope.get("raw_path")
    if not raw:
        raw = request.scope["path"].encode()
    return raw.split(b"?", 1)[0].split(b"/")


def user_id_of(segment: bytes) -> str:
    """One percent-encoded segment as a user id the contract allows, else 400."""
    try:
        user = unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_user_id", "the user id is not UTF-8 once decoded") from None
    if not user or len(user) > MAX_USER_ID_LENGTH or CONTROL_CHARACTERS.search(user):
        raise ApiError(400, "bad_user_id", f"a user id is 1..{MAX_USER_ID_LENGTH} characters "
                                           "without control characters")
    return user


# -- plumbing ------------------------------------------------------------------------------------


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("recs_serve_requests_total", "HTTP requests answered",
                                ["route", "status"], registry=self.registry)
        self.seconds = Histogram(
            "recs_serve_request_seconds", "time to answer, by route", ["route"],
            buckets=(.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1, 2.5),
            registry=self.registry)
        self.redis_errors = Counter("recs_serve_redis_errors_total",
                                    "requests answered 503 because Redis failed",
                                    registry=self.registry)


def authorized(request: Request, token: str | None) -> bool:
    if not token:
        return True
    header = request.headers.get("authorization", "")
    given = header[7:] if header[:7].lower() == "bearer " else request.cookies.get(COOKIE, "")
    return hmac.compare_digest(given.encode(), token.encode())


Handler = Callable[[Request, AsyncRecsClient], Awaitable[Response]]


def endpoint(route: str, *, public: bool = False) -> Callable[[Handler], Callable]:
    """Wrap a handler: the token check, errors as JSON (Redis errors as 503), metrics."""

    def wrap(handler: Handler):
        async def run(request: Request) -> Response:
            started = time.perf_counter()
            state = request.app.state
            try:
                if not public and not authorized(request, state.config.token):
                    raise ApiError(401, "unauthorized", "a valid bearer token is required")
                response = await handler(request, state.recs)
            except ApiError as exc:
                response = error_response(exc.status, exc.error, exc.detail)
            except redis.RedisError as exc:
                state.metrics.redis_errors.inc()
                log.warning("redis unavailable: %s", type(exc).__name__)
                response = error_response(503, "unavailable", "Redis is unavailable")
            if response.status_code == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            state.metrics.requests.labels(route, str(response.status_code)).inc()
            state.metrics.seconds.labels(route).observe(time.perf_counter() - started)
            return response

        run.__name__ = handler.__name__
        return run

    return wrap


# -- the API -------------------------------------------------------------------------------------


@endpoint("similar")
async def similar(request: Request, recs: AsyncRecsClient) -> Response:
    lang = lang_of(request.path_params["lang"])
    rid = resource_id_of(request.path_params["resource_id"])
    n = n_of(request)
    listed = await recs.similar(lang, rid, n)
    if not listed.published:
        raise ApiError(404, "no_model", f"no model is published for {lang!r}")
    if not listed.items:
        raise ApiError(404, "unknown_resource",
                       f"resource {rid} is not covered by the published {lang!r} model")
    return JSON({"lang": lang, "resource_id": rid, "resource": listed.details.get(rid),
                 "items": rendered(listed)})


@endpoint("users")
async def users(request: Request, recs: AsyncRecsClient) -> Response:
    """``/v1/{lang}/users/{user_id}/{recommendations|explain}``, parsed from the raw path."""
    parts = raw_segments(request)
    if len(parts) != 6 or parts[5] not in (b"recommendations", b"explain"):
        raise ApiError(404, "not_found", "expected /v1/{lang}/users/{user_id}/recommendations "
                                         "(a user id is one segment: encode / as %2F)")
    lang = lang_of(parts[2].decode("ascii", "replace"))
    user = user_id_of(parts[4])
    n = n_of(request)
    if parts[5] == b"explain":
        from recs.serve_page import explain_user

        state = request.app.state
        return JSON(await explain_user(state.config, state.cache, recs, lang, user, n))
    found = await recs.recommend(lang, user, n)
    if not found.published:
        raise ApiError(404, "no_model", f"no model is published for {lang!r}")
    return JSON({"lang": lang, "user_id": user, "source": found.source,
                 "items": rendered(found)})


@endpoint("model")
async def model(request: Request, recs: AsyncRecsClient) -> Response:
    lang = lang_of(request.path_params["lang"])
    info = await recs.model_info(lang)
    if info is None:
        raise ApiError(404, "no_model", f"no model is published for {lang!r}")
    return JSON({**info, "lang": lang, "age_seconds": age_seconds(info.get("trained_at"))})


@endpoint("search")
async def search(request: Request, recs: AsyncRecsClient) -> Response:
    from recs.serve_page import search_titles

    lang = lang_of(request.path_params["lang"])
    query = request.query_params.get("q", "").strip()
    if not query or len(query) > 200:
        raise ApiError(400, "bad_query", "q: 1..200 characters of a title (or an id)")
    found = await search_titles(request.app.state.cache, recs, lang, query, n_of(request))
    return JSON({"lang": lang, "q": query, "items": found})


@endpoint("healthz", public=True)
async def healthz(request: Request, recs: AsyncRecsClient) -> Response:
    try:
        await recs.ping()
        langs = await recs.langs()
        models = {lang: await recs.model_info(lang) for lang in langs}
    except redis.RedisError as exc:
        return JSON({"status": "unavailable", "redis": f"unreachable ({type(exc).__name__})"},
                    status_code=503)
    return JSON({"status": "ok", "redis": "ok", "models": {
        lang: {"version": m.get("version"), "trained_at": m.get("trained_at"),
               "age_seconds": age_seconds(m.get("trained_at"))}
        for lang, m in models.items() if m}})


@endpoint("metrics")
async def metrics(request: Request, recs: AsyncRecsClient) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)


@endpoint("openapi")
async def openapi(request: Request, recs: AsyncRecsClient) -> Response:
    from recs.serve_openapi import document

    return JSON(document())


# -- the page ------------------------------------------------------------------------------------


@endpoint("page", public=True)
async def page(request: Request, recs: AsyncRecsClient) -> Response:
    from recs.serve_page import login_form, render_page

    config = request.app.state.config
    if not authorized(request, config.token):
        # A sign-in form, no data; 200 so a browser does not log a failed load.
        return HTMLResponse(login_form(), headers=PAGE_HEADERS)
    return HTMLResponse(await render_page(config, recs, request.app.state.lag),
                        headers=PAGE_HEADERS)


@endpoint("login", public=True)
async def login(request: Request, recs: AsyncRecsClient) -> Response:
    from recs.serve_page import login_form

    token = request.app.state.config.token
    given = parse_qs((await request.body()).decode("utf-8", "replace")).get("token", [""])[0]
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        return HTMLResponse(login_form(wrong=bool(token)), status_code=401, headers=PAGE_HEADERS)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        return error_response(404, "not_found", f"no static file {name!r}")
    body = package_files.files("recs").joinpath("web", name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})


async def http_error(request: Request, exc: HTTPException) -> Response:
    detail = "no such route (see /openapi.json)" if exc.status_code == 404 else str(exc.detail)
    return error_response(exc.status_code, "not_found" if exc.status_code == 404 else
                          "method_not_allowed" if exc.status_code == 405 else "http_error", detail)


def create_app(config: ServeConfig, keys: Keys | None = None) -> Starlette:
    """The ASGI app. ``keys`` overrides the key layout (tests); else ``Keys(config.prefix)``."""
    from recs.serve_page import PageCache

    @asynccontextmanager
    async def lifespan(app: Starlette):
        client = connect_async(config.redis_url, config.redis_timeout)
        app.state.recs = AsyncRecsClient(client, config.prefix)
        if keys is not None:
            app.state.recs.keys = keys
        app.state.lag = None
        if config.kafka_bootstrap_servers:
            from recs.serve_kafka import LagProbe

            app.state.lag = LagProbe(config.kafka_bootstrap_servers, config.topic,
                                     config.group, dict(config.kafka_config))
        try:
            yield
        finally:
            await client.aclose()
            if app.state.lag is not None:
                app.state.lag.close()

    routes = [
        Route("/", page), Route("/login", login, methods=["POST"]),
        Route("/static/{name}", static),
        Route("/healthz", healthz), Route("/metrics", metrics), Route("/openapi.json", openapi),
        Route("/v1/{lang}/model", model),
        Route("/v1/{lang}/resources", search),
        Route("/v1/{lang}/resources/{resource_id}/similar", similar),
        Route("/v1/{lang}/users/{rest:path}", users),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error})
    app.state.config = config
    app.state.metrics = Metrics()
    app.state.cache = PageCache()
    return app


def cmd_serve(args) -> int:
    """``recs serve``: run the app on ``--host``/``--port``. The first SIGTERM/SIGINT lets
    requests in flight finish and exits 0, like every service; a second stops at once."""
    import uvicorn

    from core.signals import on_stop_signals

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
    config = ServeConfig(
        redis_url=args.redis_url, prefix=args.prefix, token=args.token or None,
        kafka_bootstrap_servers=args.kafka_bootstrap_servers, topic=args.topic,
        group=args.group, kafka_config=tuple(parse_kafka_config(args.kafka_config).items()))
    log.info("serving", extra={"fields": {"host": args.host, "port": args.port,
                                          "token": "set" if config.token else "none"}})
    Server(uvicorn.Config(create_app(config), host=args.host, port=args.port, log_config=None,
                          access_log=False, server_header=False, lifespan="on")).run()
    log.info("stopped")
    return 0
