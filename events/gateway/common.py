"""What the routes share: who is asking, the body as a model, the ETag, JSON answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from events.contract.http import request_error_details
from events.envelope import MAX_JSON_DEPTH
from events.gateway.app import GATEWAY, Gateway
from events.gateway.errors import ApiError, invalid_body
from events.service.access import Access, authorize
from statemachine.errors import ErrorCode, bounded

__all__ = [
    "MAX_HEADER_CHARS",
    "body_model",
    "clean_header",
    "etag",
    "expected_version",
    "gateway_of",
    "json_answer",
    "json_object",
    "not_found",
    "query_flag",
    "read_in_time",
    "weak_if_match",
    "who",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

#: Methods whose body may be absent (the SDK sends none): an empty body is ``{}``.
_MAX_IF_MATCH_CHARS: Final = 64


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


#: The longest value of a header the gateway reads (X-Namespace, Idempotency-Key).
MAX_HEADER_CHARS: Final = 256


def clean_header(request: web.Request, name: str) -> str | None:
    """A header's value if it is printable UTF-8 text of at most ``MAX_HEADER_CHARS``
    characters; absent: None; anything else: 400 (its value never echoed)."""
    value = request.headers.get(name)
    if value is None:
        return None
    try:
        value.encode("utf-8")  # aiohttp keeps bytes that are not UTF-8 as surrogates
    except UnicodeEncodeError:
        value = "\x00"
    if not value.isprintable() or len(value) > MAX_HEADER_CHARS:
        raise ApiError(
            400,
            "invalid_header",
            f"the {name} header must be printable UTF-8 text of at most "
            f"{MAX_HEADER_CHARS} characters",
            code="invalid_header",
            details={"header": name},
        )
    return value


async def who(request: web.Request, scope: str) -> Access:
    """The caller's access for ``scope``: 401, 400 (no X-Namespace) or 403 otherwise."""
    gateway = gateway_of(request)
    assert gateway.pool is not None  # noqa: S101 - routes run only while started
    authorization = request.headers.get("Authorization")
    if authorization is not None and not (authorization.isascii() and authorization.isprintable()):
        authorization = ""  # not a key: 401, like a missing one
    return await authorize(
        gateway.pool,
        authorization,
        clean_header(request, "X-Namespace"),
        scope,
        gateway.clock_offset,
    )


async def json_object(request: web.Request) -> tuple[dict[str, Any], bytes]:
    """The body as a JSON object (absent or empty: ``{}``), and its bytes. Read within the
    application's size limit (413 past it) and in time (``read_in_time``: 408); not JSON, or
    not an object: 400."""
    limit = gateway_of(request).body_limit
    if request.content_length is not None and request.content_length > limit:
        # Refused before a byte of it is read (a body without a length is cut at the limit
        # by aiohttp's client_max_size as it is read).
        raise ApiError(
            413,
            "too_large",
            f"the request body is {request.content_length} bytes; the limit is {limit}",
            code="too_large",
            details={"limit_bytes": limit},
        )
    raw = await read_in_time(request, request.read())
    if not raw.strip():
        return {}, raw
    try:
        # Strict: UTF-8 only (no byte order mark), no NaN or Infinity (not JSON).
        value = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(
            400, "invalid_json", "the request body is not valid JSON", code="invalid_json"
        ) from exc
    if not isinstance(value, dict) or _deeper_than(value, MAX_JSON_DEPTH):
        raise ApiError(
            400,
            "invalid_json",
            f"the request body must be a JSON object nested at most {MAX_JSON_DEPTH} deep",
            code="invalid_json",
        )
    return value, raw


async def read_in_time(request: web.Request, read: Awaitable[T]) -> T:
    """``read``, a read of the request's body, within ``gateway_read_timeout_seconds`` of
    now: a client that sends it slower (or stops) is answered 408 instead of holding the
    connection and its handler for as long as it likes. The connection is then closed, after
    aiohttp's lingering close (at most 10 s of reading what the client still sends)."""
    seconds = gateway_of(request).settings.gateway_read_timeout_seconds
    try:
        async with asyncio.timeout(seconds):
            return await read
    except TimeoutError:
        raise ApiError(
            408,
            "request_timeout",
            f"the request body did not arrive within {seconds:g} s",
            code="request_timeout",
            details={"timeout_seconds": seconds},
        ) from None


def _deeper_than(value: Any, limit: int) -> bool:
    """Is ``value`` (parsed JSON) nested deeper than ``limit`` (the service's own bound)?"""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def body_model(model: type[M], data: dict[str, Any], where: str = "body") -> M:
    """``data`` as ``model``; unknown keys and bad values: 422, each one named (an unknown
    key with the keys the body accepts)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = invalid_body(exc, where)
        error.details.update(request_error_details(model, exc))
        raise error from exc


def query_flag(request: web.Request, name: str) -> bool | None:
    """A boolean query parameter (true/false/1/0, any case), None when absent; else 422."""
    raw = request.query.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise ApiError(
        422,
        ErrorCode.VALIDATION_ERROR.value,
        f"query parameter {name} must be true or false",
        code=ErrorCode.VALIDATION_ERROR.value,
        details={"errors": [{"field": f"query.{name}", "problem": "not a boolean"}]},
    )


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(request: web.Request) -> int | None:
    """``If-Match: "<version>"`` as the version the write expects (``*``: none); a header
    that is not one quoted version: 400. A weak tag (``W/"<version>"``) parses, but never
    matches (``weak_if_match``)."""
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    text = raw.strip()
    if text.startswith("W/"):
        text = text[2:]
    inner = text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else ""
    if not (inner.isascii() and inner.isdigit()) or len(inner) > 18:
        raise ApiError(
            400,
            "invalid_if_match",
            'If-Match must be one ETag as GET gives it: "<version>"',
            code="invalid_if_match",
            details={"header": "If-Match", "value": bounded(raw, _MAX_IF_MATCH_CHARS)},
        )
    return int(inner)


def weak_if_match(request: web.Request) -> bool:
    """Is ``If-Match`` a weak tag? If-Match compares strongly (RFC 9110, 13.1.1): a weak tag
    matches no version, so the write is 412 (once the sync is known to be the caller's)."""
    return request.headers.get("If-Match", "").strip().startswith("W/")


def not_found(what: str = "sync configuration") -> ApiError:
    """404, naming nothing the caller did not give (another tenant's sync looks absent)."""
    return ApiError(404, ErrorCode.NOT_FOUND.value, f"{what} not found", code="not_found")


def json_answer(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, default=str).encode(),
        content_type="application/json",
        headers=headers,
    )
