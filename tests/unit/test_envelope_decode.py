"""``decode_command`` reads the common record in fewer steps (headers read in C, each one once,
the contract's spellings matched as bytes, a small JSON object read without ``json.loads``'s
wrapper): every input decodes as the general reading (kept here as the reference) decodes it,
hostile ones included."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.envelope import (
    CONTENT_TYPE,
    DERIVED_PREFIX,
    MAX_ID_CHARS,
    SPECVERSION,
    RawCommand,
    Undecodable,
    _read_headers,
    _unstorable,
    command_headers,
    decode_command,
)
from statemachine.commands import CommandType
from statemachine.errors import ErrorCode, bounded

LIMIT = 1 << 20


def _fields(headers: Any) -> dict[str, bytes | None]:
    return {key.lower(): value for key, value in headers or ()}


def _text(fields: dict[str, bytes | None], name: str) -> str | None:
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    return text or None


def reference(
    key: bytes | None, value: bytes | None, headers: Any, max_bytes: int
) -> RawCommand | Undecodable:
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


def outcome(decode: Any, *args: Any) -> tuple[str, str]:
    """What a decoder returns (its repr: NaN equals itself there, key order counts), or the
    type of what it raises."""
    try:
        return "returned", repr(decode(*args))
    except Exception as exc:
        return "raised", type(exc).__name__


def assert_same(key: Any, value: Any, headers: Any, max_bytes: int = LIMIT) -> None:
    expected = outcome(reference, key, value, headers, max_bytes)
    assert outcome(decode_command, key, value, headers, max_bytes) == expected


KEY = b"sync_a"
BASE = command_headers(
    command_id="c-1",
    command_type="sync.pause",
    sync_config_id="sync_a",
    api_key="sk_x",
    namespace="production",
    source="test",
    expected_version=3,
)
PAUSE = json.dumps({"paused_by_user_id": "user_bench", "reason": "bench"}).encode()


def changed(**changes: bytes | None) -> list[tuple[str, bytes]]:
    out = dict(BASE)
    for name, value in changes.items():
        name = name.replace("_", "-") if name == "content_type" else name
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return list(out.items())


def test_the_common_record_is_a_command_as_before() -> None:
    decoded = decode_command(KEY, PAUSE, BASE, LIMIT)
    assert isinstance(decoded, RawCommand)
    assert decoded.type is CommandType.PAUSE and decoded.expected_version == 3
    assert decoded.data == {"paused_by_user_id": "user_bench", "reason": "bench"}
    assert_same(KEY, PAUSE, BASE)
    assert_same(KEY, PAUSE, tuple(BASE))


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        (),
        [(name.upper(), value) for name, value in BASE],  # names in capitals: read lower-cased
        [*BASE, ("CE_ID", b"c-2")],  # given twice, differently spelled: the last one counts
        [*BASE, ("ce_id", b"c-3")],  # given twice
        [*BASE, ("x-extra", None)],  # a header without a value
        [*BASE, ("\u03a3", b"x")],  # lower-cased by context (final sigma)
        [*BASE, ("ce_\u0130d", b"x")],  # lower-cased into two characters
        [(name, bytearray(value)) for name, value in BASE],
        [[name, value] for name, value in BASE],  # pairs as lists
        [*BASE, ("x", b"1", b"2")],  # not a pair: raises, as it always did
        [*BASE, (b"bytes-name", b"x")],  # a name that is not text: raises too
        [*BASE, ("x", "text")],
        changed(ce_type=b" sync.pause "),
        changed(ce_type=b"sync.Pause"),
        changed(ce_type=b"sync.nope"),
        changed(ce_type=b"\xff\xfe"),
        changed(ce_type=b"x" * 500),
        changed(ce_type=b""),
        changed(ce_type=None),
        changed(ce_specversion=b" 1.0 "),
        changed(ce_specversion=b"1.1"),
        changed(ce_specversion=b"1.0\x00"),
        changed(ce_specversion=None),
        changed(ce_source=b"  "),
        changed(ce_source=None, ce_id=None),
        changed(ce_id=b"x" * 257),
        changed(ce_id=b"x" * 256),
        changed(ce_id=f"{DERIVED_PREFIX}t:0:1".encode()),
        changed(ce_id=b"a\x00b"),
        changed(content_type=b"application/json; charset=utf-8"),
        changed(content_type=b" Application/JSON "),
        changed(content_type=b"text/plain"),
        changed(content_type=b"\xff"),
        changed(content_type=b""),
        changed(content_type=None),
        changed(ce_subject=b"sync_b"),
        changed(ce_subject=None),
        changed(ce_subject=b"s" * 300),
        changed(ce_expectedversion=b"-1"),
        changed(ce_expectedversion=b"x"),
        changed(ce_expectedversion=b" 12 "),
        changed(ce_time=b"yesterday"),
        changed(ce_time=b"2026-01-02T03:04:05+02:00"),
        changed(authorization=None),
        changed(**{"x-namespace": b"\xc3"}),
    ],
)
def test_headers_decode_as_before(headers: Any) -> None:
    assert_same(KEY, PAUSE, headers)


@pytest.mark.parametrize(
    "key", [None, b"", b"sync_b", b"\xff", b"a\x00", b"k" * 257, "sync_a", bytearray(b"sync_a")]
)
def test_keys_decode_as_before(key: Any) -> None:
    assert_same(key, PAUSE, BASE)


def nested(depth: int, inner: str = "1") -> bytes:
    return ('{"a":' * depth + inner + "}" * depth).encode()


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"{}",
        b"{} ",
        b" {}",
        b"{}x",
        b'{"a": 1}{"b": 2}',
        b"[1, 2]",
        b'"text"',
        b"{",
        b'{"a": NaN, "b": Infinity, "c": 1e999, "d": 123456789012345678901234567890}',
        b'{"a": 1, "a": 2}',
        b'{"a": "\\u0000"}',
        b'{"\\u0000": 1}',
        b'{"a": "\\ud800"}',
        b'{"a": "\\ud83d\\ude00"}',
        b'{"a": "\\\\u0000"}',  # a backslash, then "u0000": storable
        b'{"a": "\xed\xa0\x80"}',  # a surrogate in the bytes themselves
        b'{"a": "\xff"}',
        b'{"a": "x\x00"}',
        b'{"a": "[[[[{{{{"}',
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
        '{"a": "\u00e9"}'.encode("utf-16-le"),
        '{"a": "\u00e9"}'.encode("utf-16"),
        '{"a": 1}'.encode("utf-32-be"),
        b"{\x00",
        nested(62),
        nested(63),
        nested(64),
        nested(65),
        nested(63, "[1]"),
        nested(63, "[]"),
        nested(2000),
        b'{"a": [' + b"[" * 70 + b"]" * 70 + b"]}",
        PAUSE * 2,
        b"{" + b'"k": "' + b"v" * 2_000_000 + b'"}',  # too large
        "{}",  # text, not bytes
        bytearray(PAUSE),
    ],
)
def test_values_decode_as_before(value: Any) -> None:
    assert_same(KEY, value, BASE)


def test_too_large_counts_the_same_bytes() -> None:
    size = len(PAUSE) + sum(len(k) + len(v) for k, v in BASE)
    assert_same(KEY, PAUSE, BASE, size)
    assert_same(KEY, PAUSE, BASE, size - 1)
    assert isinstance(decode_command(KEY, PAUSE, BASE, size - 1), Undecodable)
    duplicated = [*BASE, ("ce_id", b"c-2")]
    assert_same(KEY, PAUSE, duplicated, size)  # the duplicate's bytes count too


def test_headers_are_read_as_the_general_way_reads_them() -> None:
    for headers in ([*BASE, ("x", None)], [*BASE, ("X", b"1")], [*BASE, ("x", b"1")] * 2, BASE):
        fields, size = _read_headers(headers)
        assert fields == _fields(headers)
        assert list(fields) == list(_fields(headers))
        assert size == sum(len(k) + len(v or b"") for k, v in headers)


NAMES = [
    "ce_specversion",
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_time",
    "content-type",
    "ce_subject",
    "authorization",
    "x-namespace",
    "ce_expectedversion",
]
VALUES = [
    b"1.0",
    b"sync.pause",
    b"sync.resume",
    b" sync.pause",
    b"application/json",
    b"text/plain",
    b"sync_a",
    b"c-1",
    b"kafka:x",
    b"",
    b" ",
    b"\x00",
    b"\xff",
    b"7",
    b"-3",
    b"2026-01-02T03:04:05Z",
    None,
]
JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=12,
).map(lambda data: json.dumps({"d": data}, ensure_ascii=False).encode("utf-8", "surrogatepass"))


@settings(max_examples=400, deadline=None)
@given(
    key=st.sampled_from([None, b"", b"sync_a", b"\xff"]) | st.binary(max_size=8),
    value=st.sampled_from([None, b"", PAUSE, b"{}", b"[]"]) | JSON_TEXT | st.binary(max_size=24),
    headers=st.lists(
        st.tuples(
            st.sampled_from(NAMES) | st.sampled_from([n.upper() for n in NAMES]),
            st.sampled_from(VALUES) | st.binary(max_size=8),
        ),
        max_size=14,
    ),
    tupled=st.booleans(),
    max_bytes=st.sampled_from([LIMIT, 40, 200]),
)
def test_any_record_decodes_as_before(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]],
    tupled: bool,
    max_bytes: int,
) -> None:
    assert_same(key, value, tuple(headers) if tupled else headers, max_bytes)


@settings(max_examples=400, deadline=None)
@given(
    changes=st.dictionaries(st.sampled_from(NAMES), st.sampled_from(VALUES), max_size=3),
    value=st.sampled_from([None, b"", PAUSE]) | JSON_TEXT,
)
def test_a_command_with_a_few_headers_changed_decodes_as_before(
    changes: dict[str, bytes | None], value: bytes | None
) -> None:
    headers = changed(**changes)
    assert_same(KEY, value, headers)
    assert_same(KEY, value, [(name.title(), raw) for name, raw in headers])
