"""Typed errors of the lifecycle: each maps to one error code of the contract."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["CommandError", "ErrorCode", "validation_details"]


class ErrorCode(StrEnum):
    """The contract's error codes, carried by ``rejected`` results."""

    VALIDATION_ERROR = "validation_error"
    INVALID_TRANSITION = "invalid_transition"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    VERSION_CONFLICT = "version_conflict"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    LOCK_CONFLICT = "lock_conflict"
    LOCK_LOST = "lock_lost"
    UNSUPPORTED_TYPE = "unsupported_type"
    TOO_LARGE = "too_large"


class CommandError(BaseModel):
    """``{code, message, details}``: why a command was rejected, in words a caller can act on."""

    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


# pydantic's error context keys that state a limit (ge=30 -> {"ge": 30}).
_LIMIT_KEYS = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern", "expected")


def validation_details(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> dict[str, Any]:
    """Turn a pydantic error into ``{"errors": [{field, problem, limit?}]}``.

    The offending input is never echoed: it may be huge, or something that should not travel.
    """
    errors: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = (*prefix, *err["loc"])
        entry: dict[str, Any] = {
            "field": ".".join(str(p) for p in loc) or "(root)",
            "problem": err["msg"],
            "type": err["type"],
        }
        ctx = err.get("ctx") or {}
        limits = {k: _jsonable(ctx[k]) for k in _LIMIT_KEYS if k in ctx}
        if limits:
            entry["limit"] = limits
        errors.append(entry)
    return {"errors": errors}


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
