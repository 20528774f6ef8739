"""CloudEvents 1.0 over Kafka, binary content mode: attributes in ``ce_*`` headers, data as value.

``decode_command`` turns a consumed record into either a ``RawCommand`` (well-formed envelope,
JSON data not yet validated) or an ``Undecodable`` with the reason it goes to the dead letters.
"""

from __future__ import annotations

import json
from base64 import urlsafe_b64decode
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic_core import from_json, to_json

from statemachine.commands import CommandType
from statemachine.errors import ErrorCode, bounded

__all__ = [
    "CONTENT_TYPE",
    "REDACTED",
    "SOURCE",
    "RawCommand",
    "Undecodable",
    "ce_headers",
    "command_headers",
    "decode_command",
    "derived_id",
    "header",
    "pack_headers",
    "rfc3339",
    "unpack_headers",
]

CONTENT_TYPE: Final = "application/json"
SPECVERSION: Final = "1.0"
MAX_ID_CHARS: Final = 256
#: The prefix of the ids the service derives for messages it cannot authenticate or decode
#: (``derived_id``); a command id may not start with it.
DERIVED_PREFIX: Final = "kafka:"
#: ``ce_source`` of every message synclife writes.
SOURCE: Final = "synclife"
#: What a dead letter carries instead of the ``authorization`` header.
REDACTED: Final = b"[redacted]"
#: Deepest nesting of the JSON data accepted (pydantic cannot serialize beyond ~250 levels).
MAX_JSON_DEPTH: Final = 64

Headers = list[tuple[str, bytes]]


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def ce_headers(
    *,
    event_id: str,
    event_type: str,
    source: str,
    subject: str | None,
    time: datetime,
    extra: dict[str, str] | None = None,
) -> Headers:
    """Headers of a binary-mode CloudEvent, UTF-8 encoded."""
    out: Headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_type", event_type.encode()),
        ("ce_source", source.encode()),
        ("ce_time", rfc3339(time).encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
    if subject is not None:
        out.append(("ce_subject", subject.encode()))
    for name, value in (extra or {}).items():
        out.append((name, value.encode()))
    return out


def command_headers(
    *,
    command_id: str,
    command_type: str,
    sync_config_id: str,
    api_key: str,
    namespace: str,
    source: str,
    expected_version: int | None = None,
) -> Headers:
    """The headers of a command, as the contract has them: a CloudEvent sent now, with the
    API key and the namespace (and the version the sender expects, if any)."""
    extra = {"authorization": f"Bearer {api_key}", "x-namespace": namespace}
    if expected_version is not None:
        extra["ce_expectedversion"] = str(expected_version)
    return ce_headers(
        event_id=command_id,
        event_type=command_type,
        source=source,
        subject=sync_config_id,
        time=datetime.now(UTC),
        extra=extra,
    )


def derived_id(topic: str, partition: int, offset: int) -> str:
    """The id of a message the service cannot authenticate or decode: its rejection is answered
    under this id, fixed by where the message is, never under the ``ce_id`` it carries (which
    it could not prove to be its own)."""
    return f"{DERIVED_PREFIX}{topic}:{partition}:{offset}"


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    """The last value of header ``name`` (header names are case-insensitive here)."""
    found: bytes | None = None
    for key, value in headers or ():
        if key.lower() == name:
            found = value
    return found


def pack_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    """Kafka headers as one text value (an outbox row's): ``[["name","<base64>"], ...]``.

    Any bytes round-trip, NUL included (a dead-lettered record keeps the headers it came with).
    """
    return to_json(headers, bytes_mode="base64").decode()


# Reads the JSON and decodes the base64 in one pass, in pydantic-core: half the time of a
# from_json and a b64decode per value (the relay unpacks every row it publishes).
_HEADERS: Final = TypeAdapter(list[tuple[str, bytes]], config=ConfigDict(val_json_bytes="base64"))


def unpack_headers(text: str) -> list[tuple[str, bytes]]:
    """The headers ``pack_headers`` packed. Either base64 alphabet is read (URL-safe, or
    standard with line breaks, as Postgres's ``encode(..., 'base64')`` writes it)."""
    try:
        return _HEADERS.validate_json(text)
    except ValidationError:  # line breaks: rows that migration 0005 converted
        return [(name, urlsafe_b64decode(value)) for name, value in from_json(text)]


def _fields(headers: Any) -> dict[str, bytes | None]:
    """Headers by lower-cased name, the last value of each: what ``header`` returns, read once."""
    return {key.lower(): value for key, value in headers or ()}


def _text(fields: dict[str, bytes | None], name: str) -> str | None:
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if "\x00" in text:  # no text column can hold U+0000: unreadable, like bad UTF-8
        return None
    return text or None


def _unstorable(data: Any) -> str | None:
    """Why ``data`` (parsed JSON) cannot be stored as Postgres jsonb and sent back, if it can't.

    Postgres text rejects U+0000, UTF-8 has no unpaired surrogates (JSON can spell both as
    ``\\u`` escapes), and the models cannot serialize arbitrarily deep nesting.
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "the JSON contains U+0000 (\\u0000), which cannot be stored"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "the JSON contains an unpaired surrogate (\\ud800-\\udfff escape)"
    return None


@dataclass(frozen=True, slots=True)
class RawCommand:
    """A command whose envelope is valid; ``data`` is parsed JSON, not yet validated.

    ``key_error``: the Kafka key is missing or differs from ``ce_subject`` (the command is
    rejected once its sender is known); ``kafka_key``: the key, when it is readable text of
    at most ``MAX_ID_CHARS`` characters (what a rejection under a derived id is keyed by).
    """

    command_id: str
    type: CommandType
    sync_config_id: str
    data: Any
    authorization: bytes | None
    namespace: str | None
    expected_version: int | None
    expected_version_error: str | None
    time: datetime | None
    key_error: str | None = None
    kafka_key: str | None = None


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A message for the dead letters; ``command_id``/``sync_config_id`` when readable,
    ``command_type`` (bounded) as its ``ce_type`` reads, ``kafka_key`` as in ``RawCommand``."""

    reason: str
    code: ErrorCode
    message: str
    command_id: str | None
    sync_config_id: str | None
    command_type: str = "unknown"
    kafka_key: str | None = None


def decode_command(
    key: bytes | None, value: bytes | None, headers: Any, max_bytes: int
) -> RawCommand | Undecodable:
    """Decode one record of the commands topic (never raises)."""
    fields = _fields(headers)
    command_id = _text(fields, "ce_id")
    if command_id is not None and len(command_id) > MAX_ID_CHARS:
        command_id = None
    subject = _text(fields, "ce_subject")
    key_text: str | None = None
    if key:
        try:
            key_text = key.decode("utf-8") or None
        except UnicodeDecodeError:
            key_text = None
        if key_text is not None and "\x00" in key_text:
            key_text = None
    if key_text is not None and len(key_text) > MAX_ID_CHARS:
        key_text = None
    sync_id = subject or key_text
    if sync_id is not None and len(sync_id) > MAX_ID_CHARS:
        sync_id = None
    raw_type = fields.get("ce_type")
    type_echo = bounded(raw_type.decode("utf-8", "replace").strip()) if raw_type else ""

    def bad(reason: str, code: ErrorCode, message: str) -> Undecodable:
        return Undecodable(
            reason, code, message, command_id, sync_id, type_echo or "unknown", key_text
        )

    size = len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers or ())
    if size > max_bytes:
        return bad("too_large", ErrorCode.TOO_LARGE, f"message is {size} bytes; limit {max_bytes}")
    if _text(fields, "ce_specversion") != SPECVERSION:
        return bad("bad_envelope", ErrorCode.VALIDATION_ERROR, "ce_specversion must be 1.0")
    missing = [h for h in ("ce_id", "ce_type", "ce_source") if _text(fields, h) is None]
    if missing:
        return bad("bad_envelope", ErrorCode.VALIDATION_ERROR, f"missing headers: {missing}")
    if command_id is None:
        return bad("bad_envelope", ErrorCode.VALIDATION_ERROR, "ce_id is too long")
    if command_id.startswith(DERIVED_PREFIX):
        return bad(
            "bad_envelope",
            ErrorCode.VALIDATION_ERROR,
            f"ce_id may not start with {DERIVED_PREFIX!r}: the service derives such ids",
        )
    content_type = _text(fields, "content-type")
    if content_type is not None and content_type.split(";")[0].strip().lower() != CONTENT_TYPE:
        return bad("bad_envelope", ErrorCode.VALIDATION_ERROR, "content-type must be JSON")
    if sync_id is None:
        return bad("bad_envelope", ErrorCode.VALIDATION_ERROR, "no sync id (key or ce_subject)")
    key_error: str | None = None
    if not key:
        key_error = "the Kafka key is missing: it must be the sync id"
    elif subject and subject != key_text:
        key_error = "the Kafka key differs from ce_subject: both must be the sync id"
    type_text = _text(fields, "ce_type") or ""
    try:
        command_type = CommandType(type_text)
    except ValueError:
        return bad(
            "unsupported_type", ErrorCode.UNSUPPORTED_TYPE, f"unknown command type '{type_echo}'"
        )
    try:
        data = json.loads(value) if value else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        return bad("invalid_json", ErrorCode.VALIDATION_ERROR, "the value is not valid JSON")
    problem = _unstorable(data)
    if problem is not None:
        return bad("invalid_json", ErrorCode.VALIDATION_ERROR, problem)

    expected: int | None = None
    expected_error: str | None = None
    raw_expected = _text(fields, "ce_expectedversion")
    if raw_expected is not None:
        try:
            expected = int(raw_expected)
        except ValueError:
            expected_error = "ce_expectedversion must be an integer"
        else:
            if expected < 0:
                expected, expected_error = None, "ce_expectedversion must be >= 0"
    time: datetime | None = None
    raw_time = _text(fields, "ce_time")
    if raw_time is not None:
        try:
            time = datetime.fromisoformat(raw_time)
        except ValueError:
            time = None
    return RawCommand(
        command_id=command_id,
        type=command_type,
        sync_config_id=sync_id,
        data=data,
        authorization=fields.get("authorization"),
        namespace=_text(fields, "x-namespace"),
        expected_version=expected,
        expected_version_error=expected_error,
        time=time,
        key_error=key_error,
        kafka_key=key_text,
    )
