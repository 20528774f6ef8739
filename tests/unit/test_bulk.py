"""Bulk operations' pure rules: selectors (parsing, emptiness, SQL), operation ids, the
maximum's bounds, and the bulk events' shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from events.cli import bulk as bulk_cli
from events.cli.bulk import _selector
from events.client import SynclifeClient
from events.contract.http_bulk import BulkPauseRequest
from events.envelope import RawCommand
from events.messages import BULK_EVENT_TYPES, BulkCounts, BulkEvent, is_bulk_event
from events.service.bulk.requests import bulk_problem, canonical_operation_id, record_request
from events.service.bulk.selector import where
from events.service.processor.rows import Writes
from events.service.settings import Settings
from statemachine.commands import (
    BulkPauseData,
    BulkSelector,
    CommandType,
    PauseData,
    parse_data,
)
from statemachine.errors import CommandError, ErrorCode

OP = "bulk_01J9Z3Q8Y7X6W5V4T3S2R1P0NM"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def problem_fields(result: object) -> set[str]:
    assert isinstance(result, CommandError), result
    assert result.code is ErrorCode.VALIDATION_ERROR
    return {e["field"] for e in result.details["errors"]}


@pytest.mark.parametrize(
    "selector",
    [{}, {"metadata": {}}, {"bucket_id": None}, {"metadata": None, "status": None}],
)
def test_an_empty_selector_is_refused(selector: dict[str, Any]) -> None:
    for kind in (CommandType.BULK_PAUSE, CommandType.BULK_RESUME):
        assert "selector" in problem_fields(parse_data(kind, OP, {"selector": selector}))


@pytest.mark.parametrize(
    ("selector", "field"),
    [
        ({"status": "PAUSED"}, "selector.status"),
        ({"provider": "ftp"}, "selector.provider"),
        ({"bucket_id": ""}, "selector.bucket_id"),
        ({"metadata": {"k": {"nested": 1}}}, "selector.metadata.k"),
        ({"owner": "x"}, "selector.owner"),
    ],
)
def test_a_bad_selector_names_its_field(selector: dict[str, Any], field: str) -> None:
    fields = problem_fields(parse_data(CommandType.BULK_PAUSE, OP, {"selector": selector}))
    assert any(f.startswith(field) for f in fields), fields


def test_too_many_metadata_pairs_are_refused() -> None:
    selector = {"metadata": {f"k{i}": i for i in range(21)}}
    assert problem_fields(parse_data(CommandType.BULK_PAUSE, OP, {"selector": selector}))


def test_a_bulk_pause_takes_the_pause_fields_and_no_hold_of_its_own() -> None:
    parsed = parse_data(
        CommandType.BULK_PAUSE, OP, {"selector": {"bucket_id": "b"}, "reason": "audit"}
    )
    assert isinstance(parsed, BulkPauseData) and isinstance(parsed, PauseData)
    assert parsed.reason == "audit" and parsed.selector.bucket_id == "b"
    if "hold" in PauseData.model_fields:  # holds (v1.1): the operation's own label only
        given = {"selector": {"bucket_id": "b"}, "hold": "maintenance:x"}
        assert "hold" in problem_fields(parse_data(CommandType.BULK_PAUSE, OP, given))
    undo = parse_data(CommandType.BULK_UNDO, OP, {"selector": {"bucket_id": "b"}})
    assert "selector" in problem_fields(undo)


def test_the_bulk_pause_schema_has_no_hold_as_a_bulk_pause_refuses_one() -> None:
    assert "hold" not in BulkPauseData.model_json_schema()["properties"]
    published = json.loads((DOCS / "schemas" / "command.sync.bulk.pause.json").read_text())
    assert "hold" not in json.dumps(published["properties"])
    assert published.get("additionalProperties") is False  # a document with one is refused
    assert {"reason", "until", "selector"} <= set(published["properties"])


def test_the_selector_as_sql_binds_every_value() -> None:
    selector = BulkSelector.model_validate(
        {
            "bucket_id": "b'; DROP TABLE syncs; --",
            "provider": "s3",
            "status": "ACTIVE",
            "metadata": {"team": "a", "tier": 2},
        }
    )
    condition, args = where(selector, "org_1", "ns_1")
    assert "DROP" not in condition
    assert args == [
        "org_1",
        "ns_1",
        "b'; DROP TABLE syncs; --",
        "s3",
        "ACTIVE",
        '{"team": "a", "tier": 2}',
    ]
    assert condition == (
        "internal_id = $1 AND namespace_id = $2 AND NOT archived AND "
        "bucket_id = $3 AND data->>'provider' = $4 AND status = $5 AND "
        "(data->'metadata')::jsonb @> $6::jsonb"
    )
    only_connection = BulkSelector(connection_id="c")
    condition, args = where(only_connection, "o", "n")
    assert condition.endswith("data->>'connection_id' = $3") and args == ["o", "n", "c"]


def raw(key: str, expected: int | None = None) -> RawCommand:
    return RawCommand(
        command_id="c1",
        type=CommandType.BULK_PAUSE,
        sync_config_id=key,
        data={},
        authorization=None,
        namespace="production",
        expected_version=expected,
        expected_version_error=None,
        time=None,
    )


@pytest.mark.parametrize(
    "key",
    [
        "sync_01J9Z3Q8Y7X6W5V4T3S2R1P0NM",
        "bulk_",
        "bulk_01J9Z3Q8Y7X6W5V4T3S2R1P0N",
        "bulk_" + "U" * 26,
        "bulk_" + "u" * 26,
        "BULK_01J9Z3Q8Y7X6W5V4T3S2R1P0NM",
    ],
)
def test_a_bulk_command_is_keyed_by_an_operation_id(key: str) -> None:
    assert problem_fields(bulk_problem(raw(key))) == {"key"}


def test_an_operation_id_passes_and_an_expected_version_does_not() -> None:
    assert bulk_problem(raw(OP)) is None
    assert problem_fields(bulk_problem(raw(OP, expected=3))) == {"ce_expectedversion"}


def test_a_lower_case_operation_id_names_the_operation_in_upper_case() -> None:
    lower = OP.lower()
    assert canonical_operation_id(lower) == OP and canonical_operation_id("x_ab") == "x_ab"
    assert bulk_problem(raw(lower)) is None
    writes = Writes()
    data = parse_data(CommandType.BULK_PAUSE, lower, {"selector": {"bucket_id": "b"}})
    assert not isinstance(data, CommandError)
    record_request(writes, raw(lower), data, "org_1", "ns_1", "key_1", None)
    assert writes.bulk_requests[0][1] == OP
    assert (
        BulkPauseRequest.model_validate(
            {"selector": {"bucket_id": "b"}, "operation_id": lower}
        ).operation_id
        == OP
    )
    with pytest.raises(ValidationError):
        BulkPauseRequest.model_validate({"selector": {"bucket_id": "b"}, "operation_id": "bulk_x"})


def test_the_maximum_is_a_bounded_setting() -> None:
    assert Settings().max_bulk_syncs == 10_000
    assert Settings(max_bulk_syncs=1).max_bulk_syncs == 1
    for bad in (0, 1_000_001):
        with pytest.raises(ValidationError):
            Settings(max_bulk_syncs=bad)


def test_bulk_events_are_told_apart_and_numbered() -> None:
    assert BULK_EVENT_TYPES == {
        "sync.bulk_started": 1,
        "sync.bulk_completed": 2,
        "sync.bulk_undone": 3,
    }
    assert all(is_bulk_event(t) for t in BULK_EVENT_TYPES)
    assert not is_bulk_event("sync.status_changed")
    event = BulkEvent(
        operation_id=OP,
        kind="pause",
        namespace_id="ns_1",
        internal_id="org_1",
        version=1,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        command_id="c1",
        selector={"bucket_id": "b"},
        counts=BulkCounts(matched=3),
    )
    assert BulkEvent.model_validate_json(event.model_dump_json()) == event
    with pytest.raises(ValidationError):
        BulkCounts.model_validate({"matched": 1, "skipped": 2})


def test_the_command_line_builds_the_selector() -> None:
    assert _selector("b", None, "s3", None, ("team=a", "tier=2", "on=true")) == {
        "bucket_id": "b",
        "provider": "s3",
        "metadata": {"team": "a", "tier": 2, "on": True},
    }
    assert _selector(None, None, None, None, ("note=[1]",)) == {"metadata": {"note": "[1]"}}
    with pytest.raises(click.UsageError):
        _selector(None, None, None, None, ())
    with pytest.raises(click.BadParameter):
        _selector(None, None, None, None, ("novalue",))


def test_the_bulk_cli_converts_until_and_sends_force_and_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    async def capture(kind: str, op: str | None, data: dict[str, Any], options: Any) -> None:
        sent.append((kind, data))

    monkeypatch.setattr(bulk_cli, "_send", capture)
    paused = CliRunner().invoke(bulk_cli.bulk, ["pause", "--bucket", "b", "--until", "2h"])
    assert paused.exit_code == 0, paused.output
    assert sent[-1] == ("sync.bulk.pause", {"selector": {"bucket_id": "b"}, "until": "PT2H"})
    args = ["resume", "--bucket", "b", "--force", "--run", "next_interval", "--mode", "full"]
    resumed = CliRunner().invoke(bulk_cli.bulk, args)
    assert resumed.exit_code == 0, resumed.output
    assert sent[-1] == (
        "sync.bulk.resume",
        {"selector": {"bucket_id": "b"}, "force": True, "mode": "full", "run": "next_interval"},
    )
    CliRunner().invoke(bulk_cli.bulk, ["resume", "--bucket", "b"])
    assert sent[-1] == ("sync.bulk.resume", {"selector": {"bucket_id": "b"}})  # no force sent
    bad = CliRunner().invoke(bulk_cli.bulk, ["pause", "--bucket", "b", "--until", "soon"])
    assert bad.exit_code == 2 and "--until" in bad.output and len(sent) == 3


async def test_the_clients_bulk_pause_sends_until_as_pause_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = SynclifeClient(Settings(), api_key="k", namespace="ns")
    sent: list[tuple[CommandType, dict[str, Any]]] = []

    async def must(kind: CommandType, key: str, data: dict[str, Any], timeout: float = 0) -> None:
        sent.append((kind, data))

    monkeypatch.setattr(client, "_must", must)
    await client.bulk_pause({"bucket_id": "b"}, until=timedelta(hours=2), reason="r")
    await client.pause("sync_1", until=timedelta(hours=2))
    await client.bulk_pause({"bucket_id": "b"}, until="90m")
    assert sent[0] == (
        CommandType.BULK_PAUSE,
        {"selector": {"bucket_id": "b"}, "until": "PT2H", "reason": "r"},
    )
    assert sent[1] == (CommandType.PAUSE, {"until": "PT2H"})
    assert sent[2][1]["until"] == "PT90M"
