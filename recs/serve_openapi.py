"""The OpenAPI 3.1 document of ``recs serve`` (served at ``/openapi.json``), written out here
from a compact table of the routes rather than generated from type annotations: the API is
small, and this keeps the server free of a schema framework. ``tests/test_serve.py`` checks
that every route of the app is described and every described route exists."""

from __future__ import annotations

from recs.serve_base import MAX_N

_ERROR = {"type": "object", "required": ["error", "detail"],
          "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}
_ITEM = {"type": "object", "required": ["resource_id", "score"], "properties": {
    "resource_id": {"type": "integer", "minimum": 1, "maximum": 4294967295},
    "score": {"type": "number"},
    "title": {"type": "string"}, "folder": {"type": "string"},
    "subject": {"type": "string"}, "tags": {"type": "string"}},
    "description": "title, folder, subject and tags appear when `recs resources load` "
                   "loaded the resource's details"}
_LIST = {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}

LANG = {"name": "lang", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": "^[a-z]{2,3}$"}}
N = {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_N,
                                            "default": 10}}
USER = {"name": "user_id", "in": "path", "required": True,
        "description": "one percent-encoded path segment (encode / as %2F, ? as %3F, % as "
                       "%25); 1..128 characters, no control characters",
        "schema": {"type": "string"}}
RESOURCE = {"name": "resource_id", "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": 4294967295}}

# path -> (summary, parameters, 200 schema, error statuses, needs the token)
ROUTES = {
    "/v1/{lang}/resources/{resource_id}/similar": (
        "The resources most similar to one, best first (score: cosine similarity for ALS and "
        "blend models, the EASE weight under --model ease; see GET /v1/{lang}/model).",
        [LANG, RESOURCE, N], {"type": "object", "properties": {
            "lang": {"type": "string"}, "resource_id": {"type": "integer"},
            "resource": {"type": ["object", "null"]}, "items": _LIST}},
        (400, 401, 404, 503), True),
    "/v1/{lang}/users/{user_id}/recommendations": (
        "The user's list, best first; `source` says whether it is the user's own list "
        "(personal), the language's fallback list (trending) or nothing (none); "
        "`model_version`, `arm` and `experiment` (read with the list) are what an impression "
        "event of it carries.",
        [LANG, USER, N], {"type": "object", "properties": {
            "lang": {"type": "string"}, "user_id": {"type": "string"},
            "source": {"enum": ["personal", "trending", "none"]},
            "model_version": {"type": "string"}, "arm": {"type": "string"},
            "experiment": {"type": ["string", "null"]}, "items": _LIST}},
        (400, 401, 404, 503), True),
    "/v1/{lang}/users/{user_id}/explain": (
        "The user's list with the viewed resources behind each item, and the user's views. "
        "Personal data: 403 unless the server has a token.",
        [LANG, USER, N], {"type": "object"}, (400, 401, 403, 404, 503), True),
    "/v1/{lang}/model": (
        "The published model: version, trained_at, settings, sizes, metrics, age_seconds.",
        [LANG], {"type": "object"}, (400, 401, 404, 503), True),
    "/v1/{lang}/resources": (
        "Resources whose title has, for each word of q, a word starting with it (or whose "
        "id q is), titles starting with q first; hidden resources never (needs `recs "
        "resources load`).",
        [LANG, N, {"name": "q", "in": "query", "required": True,
                   "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
        {"type": "object"}, (400, 401, 503), True),
    "/healthz": ("Redis reachable, and each language's model age. Never needs the token.",
                 [], {"type": "object"}, (503,), False),
    "/metrics": ("Prometheus metrics of this server.", [], {"type": "string"}, (401,), True),
    "/openapi.json": ("This document.", [], {"type": "object"}, (401,), True),
    "/": ("The operator page (HTML; a sign-in form without the token).", [],
          {"type": "string"}, (), True),
}
# What a 200 is, where it is not JSON.
MEDIA = {"/metrics": "text/plain; version=0.0.4", "/": "text/html"}


def _operation(path, summary, params, ok, errors, needs_token, secured) -> dict:
    responses = {"200": {"description": "OK", "content": {
        MEDIA.get(path, "application/json"): {"schema": ok}}}}
    for status in errors:
        if status == 401 and not secured:
            continue  # a server without a token never answers 401
        responses[str(status)] = {"description": _REASONS[status], "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if secured:
        responses["429"] = {"description": _REASONS[429], "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op = {"summary": summary, "parameters": params, "responses": responses}
    if secured and not needs_token:
        op["security"] = []  # the document's default is the bearer token
    return {"get": op}


_REASONS = {400: "bad input (language, id, n, query)", 401: "missing or wrong bearer token",
            403: "user look-ups need a server token", 404: "no model, or not covered",
            429: "too many wrong tokens from this address (Retry-After)",
            503: "Redis is unavailable, busy, or refuses this server's Redis user"}


def document(secured: bool = False) -> dict:
    """The document for a server with a token (``secured``) or without one: bearer auth and
    401s appear only where the server asks for a token."""
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "recs serve", "version": "1",
                 "description": "Read-only HTTP access to the lists `recs` publishes in Redis."},
        "paths": {path: _operation(path, *spec, secured) for path, spec in ROUTES.items()},
        "components": {"schemas": {"Error": _ERROR, "Item": _ITEM}},
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
