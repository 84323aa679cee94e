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

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources as package_files
from urllib.parse import parse_qs

import orjson
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from recs.serve_base import (
    API_HEADERS,
    JSON,
    ApiError,
    ServeConfig,
    age_seconds,
    error_response,
    rendered,
)
from recs.serve_guard import Throttle
from recs.serve_input import lang_of, n_of, raw_segments, resource_id_of, small_int, user_id_of
from store.aclient import AsyncRecsClient
from store.aconnect import connect_async, pool_exhausted
from store.connection import permission_denied
from store.keys import Keys

log = logging.getLogger("recs.serve")

MAX_HEAD_BYTES = 16 * 1024
"""Bytes of a request line and headers accepted (uvicorn answers 400 past them)."""
KEEP_ALIVE_SECONDS = 5
"""Seconds an idle keep-alive connection stays open."""
MAX_LOGIN_BODY = 4096
"""Bytes of a ``POST /login`` form read at most (a token is well under that)."""
COOKIE = "recs_token"
STATIC = {"page.js": "text/javascript", "page.css": "text/css",
          "favicon.svg": "image/svg+xml"}
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                **API_HEADERS}


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
        self.in_flight = Gauge("recs_serve_requests_in_flight", "requests being answered",
                               registry=self.registry)
        self.wrong_tokens = Counter("recs_serve_wrong_tokens_total",
                                    "requests with a wrong token (or refused: too many)",
                                    ["outcome"], registry=self.registry)


def credentials(request: Request) -> str:
    """The token a request carries (bearer header, else the page's cookie); '' if none."""
    header = request.headers.get("authorization", "")
    return header[7:] if header[:7].lower() == "bearer " else request.cookies.get(COOKIE, "")


def token_ok(request: Request, given: str) -> bool:
    """Whether ``given`` is the server's token (always, on a server without one). A wrong
    one counts against the client's address; an address past the limit gets 429 before its
    token is even compared."""
    state = request.app.state
    token = state.config.token
    if not token:
        return True
    if not given:
        return False
    address = request.client.host if request.client else "unknown"
    wait = state.throttle.wait(address)
    if wait:
        state.metrics.wrong_tokens.labels("refused").inc()
        raise ApiError(429, "too_many_attempts", "too many wrong tokens from this address: "
                       f"retry in {math.ceil(wait)} s", {"Retry-After": str(math.ceil(wait))})
    if hmac.compare_digest(given.encode(), token.encode()):
        return True
    state.throttle.failed(address)
    state.metrics.wrong_tokens.labels("wrong").inc()
    log.warning("wrong token", extra={"fields": {"client": address, "path": request.url.path}})
    return False


def redis_failure(metrics: Metrics, exc: redis.RedisError) -> Response:
    """The 503 for a Redis error, saying which kind: a permission the server's Redis user
    lacks, every connection busy until the deadline, or Redis unreachable."""
    metrics.redis_errors.inc()
    if permission_denied(exc):
        log.error("the Redis user lacks a permission recs serve needs: %s", exc)
        return error_response(503, "redis_permission", "Redis refused a command: the Redis "
                              "user of this server lacks a permission (README: ACL users)")
    if pool_exhausted(exc):
        log.warning("no Redis connection came free before the request's deadline")
        return error_response(503, "busy", "every Redis connection stayed busy: retry "
                              "shortly", {"Retry-After": "1"})
    log.warning("redis unavailable: %s", type(exc).__name__)
    return error_response(503, "unavailable", "Redis is unavailable")


Handler = Callable[[Request, AsyncRecsClient], Awaitable[Response]]


def endpoint(route: str, *, public: bool = False) -> Callable[[Handler], Callable]:
    """Wrap a handler: the token check, errors as JSON (Redis errors as 503), metrics."""

    def wrap(handler: Handler):
        async def run(request: Request) -> Response:
            started = time.perf_counter()
            state = request.app.state
            state.metrics.in_flight.inc()
            try:
                if not public and not token_ok(request, credentials(request)):
                    raise ApiError(401, "unauthorized", "a valid bearer token is required")
                response = await handler(request, state.recs)
            except ApiError as exc:
                response = error_response(exc.status, exc.error, exc.detail, exc.headers)
            except redis.RedisError as exc:
                response = redis_failure(state.metrics, exc)
            finally:
                state.metrics.in_flight.dec()
            if response.status_code == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            for name, value in API_HEADERS.items():
                response.headers.setdefault(name, value)
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
    tag = found.tag
    return JSON({"lang": lang, "user_id": user, "source": found.source,
                 "model_version": tag.model_version, "arm": tag.arm,
                 "experiment": tag.experiment, "items": rendered(found)})


@endpoint("model")
async def model(request: Request, recs: AsyncRecsClient) -> Response:
    lang = lang_of(request.path_params["lang"])
    info = await recs.model_info(lang)
    if info is None:
        raise ApiError(404, "no_model", f"no model is published for {lang!r}")
    return JSON({**info, "lang": lang, "age_seconds": age_seconds(info.get("trained_at"))})


@endpoint("search")
async def search(request: Request, recs: AsyncRecsClient) -> Response:
    lang = lang_of(request.path_params["lang"])
    query = request.query_params.get("q", "").strip()
    if not query or len(query) > 200:
        raise ApiError(400, "bad_query", "q: 1..200 characters of a title (or an id)")
    found = await recs.search_titles(lang, query, n_of(request))
    return JSON({"lang": lang, "q": query,
                 "items": [{"resource_id": rid, **details} for rid, details in found]})


@endpoint("healthz", public=True)
async def healthz(request: Request, recs: AsyncRecsClient) -> Response:
    try:
        await recs.ping()
        langs = await recs.langs()
        models = {lang: await recs.model_info(lang) for lang in langs}
    except redis.RedisError as exc:
        why = orjson.loads(redis_failure(request.app.state.metrics, exc).body)["error"]
        said = {"redis_permission": "permission denied", "busy": "busy"}.get(why, "unreachable")
        return JSON({"status": "unavailable", "redis": f"{said} ({type(exc).__name__})"},
                    status_code=503)
    return JSON({"status": "ok", "redis": "ok", "models": {
        lang: {"version": m.get("version"), "trained_at": m.get("trained_at"),
               "age_seconds": age_seconds(m.get("trained_at"))}
        for lang, m in models.items() if m}})


@endpoint("metrics")
async def metrics(request: Request, recs: AsyncRecsClient) -> Response:
    await request.app.state.experiments.refresh_gauges(await recs.langs())
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)


@endpoint("openapi")
async def openapi(request: Request, recs: AsyncRecsClient) -> Response:
    from recs.serve_openapi import document

    return JSON(document(secured=bool(request.app.state.config.token)))


# -- the page ------------------------------------------------------------------------------------


@endpoint("page", public=True)
async def page(request: Request, recs: AsyncRecsClient) -> Response:
    from recs.serve_page import login_form, render_page

    config = request.app.state.config
    if not token_ok(request, credentials(request)):
        # A sign-in form, no data; 200 so a browser does not log a failed load.
        return HTMLResponse(login_form(), headers=PAGE_HEADERS)
    return HTMLResponse(await render_page(config, recs, request.app.state.lag,
                                          request.app.state.experiments),
                        headers=PAGE_HEADERS)


async def form_body(request: Request, limit: int, seconds: float) -> bytes:
    """A small request body: 413 past ``limit`` bytes (checked on the declared length before
    reading, and while reading), 408 when it does not arrive within ``seconds``."""
    declared = request.headers.get("content-length", "")
    if declared and (small_int(declared, 12) is None or int(declared) > limit):
        raise ApiError(413, "too_large", f"a form of at most {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise ApiError(413, "too_large", f"a form of at most {limit} bytes")
    except TimeoutError:
        raise ApiError(408, "timeout", f"the form did not arrive within {seconds:g} s") from None
    return bytes(body)


@endpoint("login", public=True)
async def login(request: Request, recs: AsyncRecsClient) -> Response:
    from recs.serve_page import login_form

    config = request.app.state.config
    body = await form_body(request, MAX_LOGIN_BODY, config.header_timeout)
    given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
    if not config.token or not token_ok(request, given):
        return HTMLResponse(login_form(wrong=bool(config.token)), status_code=401,
                            headers=PAGE_HEADERS)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, config.token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        return error_response(404, "not_found", f"no static file {name!r}")
    body = package_files.files("recs").joinpath("web", name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={
        "Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})


async def http_error(request: Request, exc: HTTPException) -> Response:
    detail = "no such route (see /openapi.json)" if exc.status_code == 404 else str(exc.detail)
    return error_response(exc.status_code, "not_found" if exc.status_code == 404 else
                          "method_not_allowed" if exc.status_code == 405 else "http_error", detail)


def create_app(config: ServeConfig, keys: Keys | None = None) -> Starlette:
    """The ASGI app. ``keys`` overrides the key layout (tests); else ``Keys(config.prefix)``."""
    from recs.serve_experiments import ExperimentReports
    from recs.serve_page import PageCache

    @asynccontextmanager
    async def lifespan(app: Starlette):
        client = connect_async(config.redis_url, config.redis_timeout, config.redis_connections,
                               config.redis_wait)
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
            app.state.experiments.close()
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
    # Starlette would redirect /v1/en/model/ to the Host header's idea of this server.
    app.router.redirect_slashes = False
    app.state.config = config
    app.state.throttle = Throttle()
    app.state.metrics = Metrics()
    app.state.cache = PageCache()
    app.state.experiments = ExperimentReports(config.redis_url, keys,
                                              app.state.metrics.registry, config.prefix)
    return app
