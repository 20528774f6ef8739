"""CloudEvents 1.0 over Kafka, binary content mode: attributes in ``ce_*`` headers, data as value.

``decode_command`` turns a consumed record into either a ``RawCommand`` (well-formed envelope,
JSON data not yet validated) or an ``Undecodable`` with the reason it goes to the dead letters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

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
    "rfc3339",
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


def _fields(headers: Any) -> dict[str, bytes | None]:
    """Headers by lower-cased name, the last value of each: what ``header`` returns, read once."""
    return {key.lower(): value for key, value in headers or ()}


def _read_headers(headers: Any) -> tuple[dict[str, bytes | None], int]:
    """``_fields(headers)``, and the bytes the headers take (each name's characters and its
    value's bytes).

    A record's headers as the consumer gives them (a sequence of (name, bytes) pairs, each
    name lower-case and given once) are read in C: the pairs made a dict at once, its names
    and its values joined once each. Anything else (a None value, a name with a capital or
    given twice) is read the general way, which gives the same answer (a unit test holds them
    equal).
    """
    if type(headers) is tuple or type(headers) is list:
        try:
            fields = dict(headers)
            if len(fields) == len(headers):
                names = "".join(fields)
                if names.lower() == names:
                    return fields, len(names) + len(b"".join(fields.values()))
        except (TypeError, ValueError):
            pass
    fields = _fields(headers)
    return fields, sum(len(k) + len(v or b"") for k, v in headers or ())


def _text(raw: bytes | None) -> str | None:
    """A header's value as text, or None: missing, not UTF-8, holding U+0000, or blank."""
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


#: Each command type by its ``ce_type`` bytes as the contract spells it: the common case,
#: read without decoding (any other spelling, e.g. padded with blanks, is read the long way).
_TYPES: Final = {member.value.encode(): member for member in CommandType}
_JSON_TYPE: Final = CONTENT_TYPE.encode()
_SPECVERSION: Final = SPECVERSION.encode()
# ``json.loads``'s own decoder, called directly: see ``_parse_json``.
_SCAN_ONCE: Final = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _parse_json(value: bytes) -> tuple[Any, str | None]:
    """``json.loads(value)`` (raising as it does) and ``_unstorable`` of what it read.

    A JSON object as UTF-8 text (``json.loads`` reads such bytes as UTF-8) is read by the
    decoder ``json.loads`` calls, without its wrapper's regular expressions and checks, which
    cost three times the reading of a small object; and when the text has no ``\\u`` escape
    (the only way to spell U+0000 or a lone surrogate in UTF-8 text that decoded strictly) and
    fewer brackets than ``MAX_JSON_DEPTH`` (so it cannot nest deeper), it is storable without
    a walk through it. Anything else is read and walked the general way (a unit test holds
    both equal).
    """
    if type(value) is bytes and value[:1] == b"{" and value[1:2] != b"\x00":
        try:
            text = value.decode("utf-8")
            data, end = _SCAN_ONCE(text, 0)
        except Exception:  # noqa: BLE001, S110 - read again the general way, which raises
            pass
        else:
            if end == len(text):
                if "\\u" not in text and text.count("{") + text.count("[") < MAX_JSON_DEPTH:
                    return data, None
                return data, _unstorable(data)
    data = json.loads(value)
    return data, _unstorable(data)


def _bad(
    reason: str,
    code: ErrorCode,
    message: str,
    command_id: str | None,
    sync_id: str | None,
    type_echo: str,
    key_text: str | None,
) -> Undecodable:
    return Undecodable(reason, code, message, command_id, sync_id, type_echo or "unknown", key_text)


def decode_command(
    key: bytes | None, value: bytes | None, headers: Any, max_bytes: int
) -> RawCommand | Undecodable:
    """Decode one record of the commands topic (never raises).

    Each header is read once; the common spellings of the type, the version and the content
    type are matched as bytes.
    """
    fields, size = _read_headers(headers)
    id_text = _text(fields.get("ce_id"))
    command_id = id_text if id_text is None or len(id_text) <= MAX_ID_CHARS else None
    subject = _text(fields.get("ce_subject"))
    key_text: str | None = None
    if key:
        try:
            key_text = key.decode("utf-8") or None
        except UnicodeDecodeError:
            key_text = None
        if key_text is not None and ("\x00" in key_text or len(key_text) > MAX_ID_CHARS):
            key_text = None
    sync_id = subject or key_text
    if sync_id is not None and len(sync_id) > MAX_ID_CHARS:
        sync_id = None
    raw_type = fields.get("ce_type")
    command_type = _TYPES.get(raw_type) if type(raw_type) is bytes else None
    if command_type is not None:
        type_echo: str = command_type.value
        type_text: str | None = type_echo
    else:
        type_echo = bounded(raw_type.decode("utf-8", "replace").strip()) if raw_type else ""
        type_text = _text(raw_type)

    if value:
        size += len(value)
    if size > max_bytes:
        return _bad(
            "too_large",
            ErrorCode.TOO_LARGE,
            f"message is {size} bytes; limit {max_bytes}",
            command_id,
            sync_id,
            type_echo,
            key_text,
        )
    raw_version = fields.get("ce_specversion")
    if raw_version != _SPECVERSION and _text(raw_version) != SPECVERSION:
        return _bad(
            "bad_envelope",
            ErrorCode.VALIDATION_ERROR,
            "ce_specversion must be 1.0",
            command_id,
            sync_id,
            type_echo,
            key_text,
        )
    source = _text(fields.get("ce_source"))
    if id_text is None or type_text is None or source is None:
        missing = [
            name
            for name, text in (("ce_id", id_text), ("ce_type", type_text), ("ce_source", source))
            if text is None
        ]
        return _bad(
            "bad_envelope",
            ErrorCode.VALIDATION_ERROR,
            f"missing headers: {missing}",
            command_id,
            sync_id,
            type_echo,
            key_text,
        )
    if command_id is None:
        return _bad(
            "bad_envelope",
            ErrorCode.VALIDATION_ERROR,
            "ce_id is too long",
            command_id,
            sync_id,
            type_echo,
            key_text,
        )
    if command_id.startswith(DERIVED_PREFIX):
        return _bad(
            "bad_envelope",
            ErrorCode.VALIDATION_ERROR,
            f"ce_id may not start with {DERIVED_PREFIX!r}: the service derives such ids",
            command_id,
            sync_id,
            type_echo,
            key_text,
        )
    raw_content_type = fields.get("content-type")
    if raw_content_type is not None and raw_content_type != _JSON_TYPE:
        content_type = _text(raw_content_type)
        if content_type is not None and content_type.split(";")[0].strip().lower() != CONTENT_TYPE:
            return _bad(
                "bad_envelope",
                ErrorCode.VALIDATION_ERROR,
                "content-type must be JSON",
                command_id,
                sync_id,
                type_echo,
                key_text,
            )
    if sync_id is None:
        return _bad(
            "bad_envelope",
            ErrorCode.VALIDATION_ERROR,
            "no sync id (key or ce_subject)",
            command_id,
            sync_id,
            type_echo,
            key_text,
        )
    key_error: str | None = None
    if not key:
        key_error = "the Kafka key is missing: it must be the sync id"
    elif subject and subject != key_text:
        key_error = "the Kafka key differs from ce_subject: both must be the sync id"
    if command_type is None:
        try:
            command_type = CommandType(type_text)
        except ValueError:
            return _bad(
                "unsupported_type",
                ErrorCode.UNSUPPORTED_TYPE,
                f"unknown command type '{type_echo}'",
                command_id,
                sync_id,
                type_echo,
                key_text,
            )
    problem: str | None = None
    data: Any = {}
    if value:
        try:
            data, problem = _parse_json(value)
        except (ValueError, UnicodeDecodeError, RecursionError):
            problem = "the value is not valid JSON"
    if problem is not None:
        return _bad(
            "invalid_json",
            ErrorCode.VALIDATION_ERROR,
            problem,
            command_id,
            sync_id,
            type_echo,
            key_text,
        )

    expected: int | None = None
    expected_error: str | None = None
    raw_expected = _text(fields.get("ce_expectedversion"))
    if raw_expected is not None:
        try:
            expected = int(raw_expected)
        except ValueError:
            expected_error = "ce_expectedversion must be an integer"
        else:
            if expected < 0:
                expected, expected_error = None, "ce_expectedversion must be >= 0"
    time: datetime | None = None
    raw_time = _text(fields.get("ce_time"))
    if raw_time is not None:
        try:
            time = datetime.fromisoformat(raw_time)
        except ValueError:
            time = None
    return RawCommand(
        command_id,
        command_type,
        sync_id,
        data,
        fields.get("authorization"),
        _text(fields.get("x-namespace")),
        expected,
        expected_error,
        time,
        key_error,
        key_text,
    )
