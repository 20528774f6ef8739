"""Typed errors of the lifecycle: each maps to one error code of the contract."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "MAX_ECHO_CHARS",
    "MAX_REPORTED_ERRORS",
    "CommandError",
    "ErrorCode",
    "bounded",
    "reported",
    "validation_details",
]

#: The most characters of any text taken from a message that a result, an error or a log
#: line carries (the contract's bound).
MAX_ECHO_CHARS: Final = 200


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
    INTERNAL = "internal"


def bounded(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` (taken from a message) made fit to echo: at most ``limit`` characters (cut, the
    last one then "…"), U+0000 and unpaired surrogates (which no text column or UTF-8 holds)
    replaced by U+FFFD. Every path that puts message text into a result, an error or a log
    line passes it through here."""
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


class CommandError(BaseModel):
    """``{code, message, details}``: why a command was rejected, in words a caller can act on."""

    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


#: At most this many problems are listed in a ``validation_error``'s details (the rest are
#: counted in ``truncated``): a message of many bad fields must not make a huge result.
MAX_REPORTED_ERRORS: Final = 20

# pydantic's error context keys that state a limit (ge=30 -> {"ge": 30}).
_LIMIT_KEYS = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern", "expected")


def validation_details(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> dict[str, Any]:
    """Turn a pydantic error into ``{"errors": [{field, problem, limit?}]}``.

    The offending input is never echoed: it may be huge, or something that should not travel;
    what names it (an unknown field's name, a message quoting it) is cut by ``bounded``.
    """
    errors: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = (*prefix, *err["loc"])
        # A field's name may be an unknown key of the data, and a validator's message may
        # quote what it was given: both are bounded.
        entry: dict[str, Any] = {
            "field": bounded(".".join(bounded(str(p)) for p in loc)) or "(root)",
            "problem": bounded(_plain(err["msg"])),
            "type": err["type"],
        }
        ctx = err.get("ctx") or {}
        limits = {k: _jsonable(ctx[k]) for k in _LIMIT_KEYS if k in ctx}
        if limits:
            entry["limit"] = limits
        errors.append(entry)
    return reported(errors)


def reported(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"errors": ...}`` with at most ``MAX_REPORTED_ERRORS`` entries, and ``truncated``: how
    many more there were (only when there were more)."""
    if len(errors) <= MAX_REPORTED_ERRORS:
        return {"errors": errors}
    return {"errors": errors[:MAX_REPORTED_ERRORS], "truncated": len(errors) - MAX_REPORTED_ERRORS}


#: An enum member as pydantic prints it in a message (``<SyncStatus.ACTIVE: 'ACTIVE'>``).
_ENUM_REPR: Final = re.compile(r"<[A-Za-z_][\w.]*: ('[^'<>]*'|-?\d+)>")


def _plain(message: str) -> str:
    """``message`` with each enum member printed as its value (``'ACTIVE'``), as the wire
    carries it, not as Python's repr."""
    return _ENUM_REPR.sub(r"\1", message)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str):
        return bounded(_plain(value))
    if isinstance(value, int | float | bool) or value is None:
        return value
    return bounded(str(value))
