"""Text taken from a message is bounded wherever it is echoed (at most 200 characters, storable),
the Kafka key must be the sync id, and ids the service derives cannot be claimed by a command."""

from __future__ import annotations

import json
from typing import Any

import pytest

from events.envelope import (
    DERIVED_PREFIX,
    RawCommand,
    Undecodable,
    command_headers,
    decode_command,
    derived_id,
)
from statemachine import CommandType, ErrorCode, parse_data
from statemachine.errors import MAX_ECHO_CHARS, CommandError, bounded

HOSTILE = "".join(chr(c) for c in range(32)) * 30_000  # ~960 KB of control characters, NUL too
LIMIT = 8 * 1024 * 1024


def headers(**changes: str | bytes | None) -> list[tuple[str, bytes]]:
    base = dict(
        command_headers(
            command_id="c-1",
            command_type="sync.pause",
            sync_config_id="sync_a",
            api_key="sk_x",
            namespace="production",
            source="test",
        )
    )
    for name, value in changes.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value if isinstance(value, bytes) else value.encode()
    return list(base.items())


def decode(key: bytes | None = b"sync_a", **changes: Any) -> Any:
    return decode_command(key, b"{}", headers(**changes), LIMIT)


@pytest.mark.parametrize(
    "text",
    ["", "short", "x" * 200, "x" * 201, HOSTILE, "\x00" * 500, "a\ud800b", "\U0001f525" * 300],
)
def test_bounded_is_short_and_storable(text: str) -> None:
    out = bounded(text)
    assert len(out) <= MAX_ECHO_CHARS
    assert "\x00" not in out
    out.encode("utf-8")  # no unpaired surrogate
    if len(text) <= MAX_ECHO_CHARS and "\x00" not in text and "\ud800" not in text:
        assert out == text


def test_unknown_type_echo_is_bounded() -> None:
    no_nul = HOSTILE.replace("\x00", "")
    for kind, code in ((no_nul, ErrorCode.UNSUPPORTED_TYPE), (HOSTILE, ErrorCode.VALIDATION_ERROR)):
        bad = decode(ce_type="sync." + kind)
        assert isinstance(bad, Undecodable) and bad.code is code
        assert len(bad.command_type) <= MAX_ECHO_CHARS and "\x00" not in bad.command_type
        assert len(bad.message) <= MAX_ECHO_CHARS + 40 and "\x00" not in bad.message


def test_unknown_field_names_and_values_in_validation_details_are_bounded() -> None:
    huge_name = "zz" + HOSTILE.replace("\x00", "")
    data = {"paused_by_user_id": "u", huge_name: 1, "reason": HOSTILE.replace("\x00", "")}
    error = parse_data(CommandType.PAUSE, "sync_a", data)
    assert isinstance(error, CommandError) and error.code is ErrorCode.VALIDATION_ERROR
    for entry in error.details["errors"]:
        for value in entry.values():
            assert len(json.dumps(value)) <= 8 * MAX_ECHO_CHARS, entry
    assert len(error.model_dump_json()) < 10_000
    fields = {e["field"] for e in error.details["errors"]}
    assert "reason" in fields and any(f.startswith("zz") for f in fields)


def test_the_kafka_key_must_be_the_sync_id() -> None:
    ok = decode()
    assert isinstance(ok, RawCommand) and ok.key_error is None and ok.kafka_key == "sync_a"
    # A key and no ce_subject: v1's "key or subject", still valid.
    keyed = decode(ce_subject=None)
    assert isinstance(keyed, RawCommand) and keyed.key_error is None
    for raw in (
        decode(key=None),  # no key: the subject names the sync, the key is missing
        decode(key=b""),
        decode(key=b"sync_b"),  # differs from ce_subject
        decode(key=b"\xff\xfe"),  # not text: it cannot equal ce_subject
    ):
        assert isinstance(raw, RawCommand), raw
        assert raw.sync_config_id == "sync_a"
        assert raw.key_error is not None and "Kafka key" in raw.key_error
    # Neither a key nor a subject: nothing names the sync.
    assert isinstance(decode(key=None, ce_subject=None), Undecodable)


def test_a_command_id_cannot_take_a_derived_id() -> None:
    derived = derived_id("sync.commands", 2, 17)
    assert derived == "kafka:sync.commands:2:17" and derived.startswith(DERIVED_PREFIX)
    bad = decode(ce_id=derived)
    assert isinstance(bad, Undecodable) and bad.reason == "bad_envelope"
    assert "kafka:" in bad.message


def test_huge_ids_are_not_read() -> None:
    for name in ("ce_id", "ce_subject"):
        bad = decode(key=b"k" * 900_000, **{name: "c" * 900_000})
        assert isinstance(bad, Undecodable)
        assert bad.kafka_key is None  # too long to publish a result under
        for text in (bad.command_id, bad.sync_config_id):
            assert text is None or len(text) <= 256


def test_a_lock_conflict_echoes_the_holders_id_bounded() -> None:
    """The holder's worker id came from a message (its ``sync.run.start``): a conflict's
    message and details carry at most 200 characters of it."""
    from statemachine import decide
    from statemachine.commands import CommandType
    from tests.helpers.syncs import T0, make_command, make_sync

    holder = "w" * 256
    first = decide(
        make_sync(status="ACTIVE"),
        make_command(CommandType.RUN_START, {"worker_id": holder, "lease_seconds": 60}),
        T0,
    )
    assert first.final is not None and first.final.locked_by_worker_id == holder
    second = decide(
        first.final,
        make_command(CommandType.RUN_START, {"worker_id": "w2", "lease_seconds": 60}),
        T0,
    )
    assert second.error is not None and second.error.code.value == "lock_conflict"
    assert len(second.error.details["locked_by_worker_id"]) == 200
    assert len(second.error.message) < 300


def test_a_message_of_many_bad_fields_lists_twenty_and_counts_the_rest() -> None:
    """Each unknown field is a problem: 5,000 of them list 20 and count the other 4,980, so a
    small message cannot make a huge result."""
    import json

    from statemachine.commands import CommandType, parse_data
    from statemachine.errors import MAX_REPORTED_ERRORS, CommandError

    data = {f"field_{n}": 0 for n in range(5000)}
    error = parse_data(CommandType.UPDATE, "sync_1", data)
    assert isinstance(error, CommandError)
    assert len(error.details["errors"]) == MAX_REPORTED_ERRORS
    assert error.details["truncated"] == 5000 - MAX_REPORTED_ERRORS
    assert len(json.dumps(error.details)) < 8 * 1024
