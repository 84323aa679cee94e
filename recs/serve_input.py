"""What a request to ``recs serve`` names, checked: the language, a resource id, a user id (one
percent-encoded segment of the raw request target, so ``/``, ``?``, ``%`` and any Unicode
round-trip) and ``n``. Anything else is an :class:`~recs.serve_base.ApiError` 400 with the
contract's reason; no input reaches ``int()`` unbounded."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.requests import Request

from core.contract import CONTROL_CHARACTERS, MAX_RESOURCE_ID, MAX_USER_ID_LENGTH, valid_lang
from recs.serve_base import MAX_N, ApiError


def lang_of(segment: str) -> str:
    if not valid_lang(segment):
        raise ApiError(400, "bad_language",
                       f"{segment!r} is not a language code (2 or 3 lowercase letters)")
    return segment


def small_int(text: str, digits: int) -> int | None:
    """``text`` as an int when it is 1..``digits`` ASCII digits (so int() never sees a
    5,000-digit number), else None."""
    text = text.strip()
    return int(text) if 0 < len(text) <= digits and text.isascii() and text.isdigit() else None


def n_of(request: Request, default: int = 10) -> int:
    raw = request.query_params.get("n")
    if raw is None:
        return default
    n = small_int(raw, 3)
    if n is None or not 1 <= n <= MAX_N:
        raise ApiError(400, "bad_n", f"n={raw[:20]!r}: expected an integer in 1..{MAX_N}")
    return n


def resource_id_of(segment: str) -> int:
    rid = small_int(segment, 10) if segment == segment.strip() else None
    if rid is None or not 1 <= rid <= MAX_RESOURCE_ID:
        raise ApiError(400, "bad_resource_id", f"{segment[:20]!r} is not a resource id "
                                               f"(an integer in 1..{MAX_RESOURCE_ID})")
    return rid


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
