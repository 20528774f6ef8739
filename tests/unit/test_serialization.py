"""The processor serializes each sync version once and splices it into its event and result:
the bytes must be exactly those of a whole ``model_dump_json``. An outbox row's headers are
packed in one text value and must come back as they were."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.messages import CommandResult, LifecycleEvent
from events.service.packed_headers import pack_headers, unpack_headers
from events.service.processor import rows
from events.service.processor.rows import (
    EVENT_PARTS,
    EXTRAS,
    RESULT_PARTS,
    dump_with_sync,
    event_id,
)
from statemachine import CommandError, CommandType, ErrorCode, Outcome, decide
from statemachine.commands import SystemTrigger
from statemachine.decision import Change
from statemachine.model import SyncConfiguration
from statemachine.runs import system_command
from tests.helpers.syncs import T1, make_command, make_sync


def _changes() -> list[Change]:
    """Changes of every shape: status changes, run events with their extra fields."""
    out: list[Change] = []
    pending = make_sync(metadata={"team": "ä ✓", "n": [1, 2.5, None]}, next_sync_at=T1)
    run = decide(pending, make_command(CommandType.RUN_START, {"worker_id": "w1"}), T1)
    out += run.changes
    active = run.final
    assert active is not None and active.lock_token is not None
    token = {"run_id": str(active.current_sync_run_id), "lock_token": active.lock_token}
    later = T1 + timedelta(seconds=5)
    out += decide(active, make_command(CommandType.RUN_COMPLETE, {**token}), later).changes
    failed = make_command(CommandType.RUN_FAIL, {**token, "error": "x"})
    out += decide(active, failed, later).changes
    requested = decide(pending, system_command(pending, SystemTrigger.REQUEST_RUN), later)
    out += requested.changes
    paused = decide(
        active,
        make_command(
            CommandType.PAUSE, {"paused_by_user_id": "u", "reason": 'a ,"from_status": "q"'}
        ),
        T1,
    )
    out += paused.changes
    assert paused.final is not None
    resumed = decide(paused.final, make_command(CommandType.RESUME, {}), T1 + timedelta(hours=1))
    out += resumed.changes
    assert len(out) >= 6, [c.event_type for c in out]
    return out


def _event(change: Change) -> LifecycleEvent:
    return rows._event_model(change, None if change.system else str(uuid.uuid4()))


@pytest.mark.parametrize("change", _changes(), ids=lambda c: f"{c.event_type.value}")
def test_event_bytes_equal_a_whole_dump(change: Change) -> None:
    event = _event(change)
    excluded = set(EXTRAS - change.extra.keys())
    whole = event.model_dump_json(exclude=excluded).encode()
    spliced = dump_with_sync(event, EVENT_PARTS, change.sync.model_dump_json(), excluded)
    assert spliced == whole


def _results(sync: SyncConfiguration) -> list[CommandResult]:
    base: dict[str, Any] = {"command_id": 'c1,"error":', "command_type": "sync.pause"}
    return [
        CommandResult(
            **base,
            sync_config_id=sync.sync_config_id,
            outcome=Outcome.APPLIED,
            version=sync.version,
            status=sync.status,
            sync=sync,
            events=[event_id(sync.sync_config_id, sync.version)],
        ),
        CommandResult(
            **base,
            sync_config_id=sync.sync_config_id,
            outcome=Outcome.REJECTED,
            version=sync.version,
            status=sync.status,
            sync=sync,
            error=CommandError(
                code=ErrorCode.INVALID_TRANSITION, message="no", details={"current_status": "x"}
            ),
            run={"run_id": None, "stop_requested": True},
        ),
    ]


@pytest.mark.parametrize("index", [0, 1])
def test_result_bytes_equal_a_whole_dump(index: int) -> None:
    sync = _changes()[0].sync
    result = _results(sync)[index]
    whole = result.model_dump_json().encode()
    assert dump_with_sync(result, RESULT_PARTS, sync.model_dump_json()) == whole


@given(st.lists(st.tuples(st.text(), st.binary(max_size=300)), max_size=12))
def test_packed_headers_round_trip_any_bytes(headers: list[tuple[str, bytes]]) -> None:
    assert unpack_headers(pack_headers(headers)) == headers


def test_unpacked_headers_read_standard_base64_with_line_breaks() -> None:
    # What Postgres's encode(..., 'base64') writes (migration 0005 converts rows with it):
    # the standard alphabet, a line break every 76 characters.
    value = bytes(range(256))
    standard = base64.encodebytes(value).decode()
    assert "\n" in standard.strip() and ("+" in standard or "/" in standard)
    assert unpack_headers(json.dumps([["x", standard]])) == [("x", value)]


@pytest.mark.parametrize("subject", ["sync_a", "sync_ü", "s" * 256, 'a/b\\"c'])
@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 5, 8, 0, tzinfo=UTC),
        datetime(2026, 12, 5, 8, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 12, 5, 9, 0, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_packed_ce_headers_read_back_as_the_ce_headers(subject: str, moment: datetime) -> None:
    """The outbox rows' headers built from their parts read back as ``ce_headers``, in
    their order, in less room than ``pack_headers``'s text of them."""
    from events.envelope import SOURCE, ce_headers
    from events.service.processor.rows import packed_ce_headers

    for ident, event_type in [("result:c-1", "synclife.command.result"), ("x:v2", "e.ü")]:
        expected = ce_headers(
            event_id=ident, event_type=event_type, source=SOURCE, subject=subject, time=moment
        )
        packed = packed_ce_headers(ident, event_type, subject, moment)
        assert unpack_headers(packed) == expected
        assert len(packed) < len(pack_headers(expected))


@given(st.text(), st.text(), st.text(), st.text())
def test_compact_ce_headers_round_trip_any_text(
    event_id: str, event_type: str, time: str, subject: str
) -> None:
    """Any text (quotes, backslashes, control characters) comes back as it went in; the
    general form of headers that start like the compact one is not mistaken for it."""
    from events.service.packed_headers import pack_ce_headers

    packed = pack_ce_headers(event_id=event_id, event_type=event_type, subject=subject, time=time)
    assert dict(unpack_headers(packed)) == {
        "ce_specversion": b"1.0",
        "ce_id": event_id.encode(),
        "ce_type": event_type.encode(),
        "ce_source": b"synclife",
        "ce_time": time.encode(),
        "content-type": b"application/json",
        "ce_subject": subject.encode(),
    }
    general = [("ce", event_id.encode()), (event_type, subject.encode())]
    assert unpack_headers(pack_headers(general)) == general


@pytest.mark.parametrize("change", _changes(), ids=lambda c: f"{c.event_type.value}")
@pytest.mark.parametrize("command_id", [None, 'c-1,"sync":'])
def test_event_serialized_from_its_parts_is_the_models_dump(
    change: Change, command_id: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``event_json`` (no model built) writes the bytes of the ``LifecycleEvent``'s dump."""
    monkeypatch.setattr(rows, "VERIFY_DUMPS", False)  # compared here, not by the hook
    sync_json = change.sync.model_dump_json()
    fast = rows.event_json(change, command_id, sync_json)
    model = rows._event_model(change, command_id)
    assert fast == dump_with_sync(model, EVENT_PARTS, sync_json, EXTRAS - change.extra.keys())
    assert json.loads(fast)["sync"] == json.loads(sync_json)


def _decisions() -> list[tuple[str, Any]]:
    """Applied and noop decisions of the commands whose results name holds, or not."""
    pending = make_sync(next_sync_at=T1)
    run = decide(pending, make_command(CommandType.RUN_START, {"worker_id": "w1"}), T1)
    active = run.final
    assert active is not None
    paused = decide(
        active, make_command(CommandType.PAUSE, {"reason": "r", "paused_by_user_id": "u"}), T1
    )
    assert paused.final is not None
    resumed = decide(paused.final, make_command(CommandType.RESUME, {}), T1 + timedelta(hours=1))
    again = decide(
        paused.final, make_command(CommandType.PAUSE, {"reason": "r", "paused_by_user_id": "u"}), T1
    )
    trigger = decide(pending, make_command(CommandType.TRIGGER, {}), T1)
    out = [
        ("sync.run.start", run),
        ("sync.pause", paused),
        ("sync.resume", resumed),
        ("sync.pause", again),
        ("sync.trigger", trigger),
    ]
    assert {d.outcome for _, d in out} == {Outcome.APPLIED, Outcome.NOOP}
    return out


@pytest.mark.parametrize("index", range(5))
def test_applied_result_serialized_from_its_parts_is_the_models_dump(
    index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rows, "VERIFY_DUMPS", False)
    kind, decision = _decisions()[index]
    final = decision.final
    assert final is not None
    sync_json = final.model_dump_json()
    fast = rows.applied_result_json("c1", kind, final.sync_config_id, decision, final, sync_json)
    model = rows.command_result("c1", kind, final.sync_config_id, decision, final)
    assert fast == model.model_dump_json().encode()


def test_a_serialization_that_differs_from_the_model_fails_under_the_test_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hook the test session turns on compares every event with its model's dump."""
    monkeypatch.setattr(rows, "VERIFY_DUMPS", True)
    change = _changes()[0]
    monkeypatch.setattr(rows, "_EXTRA_ORDER", ())  # the run's extra fields left out: wrong
    with pytest.raises(AssertionError, match="the model's dump"):
        rows.event_json(change, None, change.sync.model_dump_json())
