"""Errors of the HTTP API, in the vendor's one body, from one middleware.

Every non-2xx answer is ``{"success": false, "status": N, "error": {"message", "type", "code",
"details"}}``: a refused key, a malformed body, a command's ``rejected`` result, a route that
does not exist. An unexpected exception is a bug: 500, logged with the request id, and the
body says nothing of it but that id.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from pydantic import ValidationError

from events.errors import TransientError
from events.service.access import AccessDenied
from statemachine.errors import CommandError, ErrorCode, bounded, validation_details

__all__ = [
    "REQUEST_ID",
    "ApiError",
    "error_body",
    "error_middleware",
    "from_command_error",
    "invalid_body",
    "status_of",
]

log = logging.getLogger("synclife.gateway")

#: The request's id (``X-Request-Id`` given by the caller, else a fresh one), on the request
#: and echoed in every answer's header of the same name.
REQUEST_ID: Final = web.RequestKey("request_id", str)

#: The HTTP status of each error code of a command's result.
_STATUS: Final[dict[str, int]] = {
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.INVALID_TRANSITION: 409,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.LOCK_CONFLICT: 409,
    ErrorCode.LOCK_LOST: 409,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.VERSION_CONFLICT: 412,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_TYPE: 400,
    ErrorCode.INTERNAL: 500,
}

#: The error type of the HTTP errors aiohttp raises itself (no route, wrong method, ...).
_HTTP_TYPES: Final[dict[int, str]] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An answer other than 2xx: ``status``, a stable ``type``, an optional finer ``code``,
    a message saying what to fix, and ``details``."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.details = details or {}
        self.headers = headers or {}


def status_of(code: str) -> int:
    """The HTTP status of a command's error code (an unknown code is a bug: 500)."""
    return _STATUS.get(code, 500)


def from_command_error(error: CommandError) -> ApiError:
    """A command's ``rejected`` result as an HTTP error: the contract's code is the type."""
    status = status_of(error.code)
    message = error.message if status != 500 else "the command failed inside the service"
    return ApiError(status, error.code.value, message, code=error.code.value, details=error.details)


def invalid_body(exc: ValidationError, where: str = "body") -> ApiError:
    """A body (or query) that does not fit its model: 422, each bad field named as the
    processor names it: a body's field bare (``status``), a query parameter's ``query.<name>``."""
    details = validation_details(exc, () if where == "body" else (where,))
    fields = [e["field"] for e in details["errors"]]
    shown = ", ".join(fields[:5]) + (", ..." if len(fields) > 5 else "")
    return ApiError(
        422,
        ErrorCode.VALIDATION_ERROR.value,
        f"invalid request {where}: {bounded(shown)}",
        code=ErrorCode.VALIDATION_ERROR.value,
        details=details,
    )


def error_body(
    status: int, type_: str, message: str, code: str | None, details: dict[str, Any]
) -> dict[str, Any]:
    return {
        "success": False,
        "status": status,
        "error": {"message": message, "type": type_, "code": code, "details": details},
    }


def _answer(error: ApiError, request_id: str) -> web.Response:
    body = error_body(error.status, error.type, error.message, error.code, error.details)
    response = web.Response(
        status=error.status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers={**error.headers, "X-Request-Id": request_id},
    )
    if error.status == 408:
        response.force_close()  # the rest of the body may still come: not another request
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place an exception becomes an answer (and a request gets its id)."""
    given = request.headers.get("X-Request-Id", "")
    request_id = bounded(given, 64) if given.isprintable() and given else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except ApiError as exc:
        return _answer(exc, request_id)
    except AccessDenied as exc:
        return _answer(ApiError(exc.status, exc.code, exc.message, code=exc.code), request_id)
    except TransientError as exc:
        log.warning("request failed: %s", exc, extra={"request_id": request_id})
        return _answer(
            ApiError(503, "unavailable", f"{exc}; try again", code="unavailable"), request_id
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _HTTP_TYPES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else exc.text or "request body too large"
        details: dict[str, Any] = {}
        if exc.status == 404:
            message = f"no route {request.method} {bounded(request.path)}"
        headers: dict[str, str] = {}
        if exc.status == 405:
            allowed = sorted(getattr(exc, "allowed_methods", ()))
            details = {"allowed": allowed}
            headers["Allow"] = ", ".join(allowed)
        return _answer(
            ApiError(exc.status, kind, bounded(message or kind), details=details, headers=headers),
            request_id,
        )
    except Exception:
        log.exception(
            "request failed: %s %s",
            request.method,
            bounded(request.path),
            extra={"request_id": request_id},
        )
        return _answer(
            ApiError(
                500,
                ErrorCode.INTERNAL.value,
                f"internal error (request id {request_id})",
                code=ErrorCode.INTERNAL.value,
                details={"request_id": request_id},
            ),
            request_id,
        )
    response.headers["X-Request-Id"] = request_id
    return response
