"""``parse_data``: each command type's data, tenancy, unknown and immutable fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from statemachine.commands import (
    SUPPORTED_TYPES,
    ActivateData,
    ArchiveData,
    BulkPauseData,
    BulkResumeData,
    BulkUndoData,
    CancelData,
    CommandType,
    CreateData,
    PauseData,
    ResumeData,
    RunCheckpointData,
    RunCompleteData,
    RunFailData,
    RunHeartbeatData,
    RunStartData,
    SystemTrigger,
    TriggerData,
    UnlockData,
    UpdateData,
    parse_data,
)
from statemachine.errors import CommandError, ErrorCode
from statemachine.model import Provider, SyncMode
from statemachine.status import SyncStatus
from tests.helpers.syncs import SYNC_ID

C = CommandType
RUN_ID = "0b7e4a4e-4f8e-4c1e-9a53-6f1b8f0c2d11"

CREATE_DATA: dict[str, Any] = {
    "bucket_id": "bkt_marketing_assets",
    "connection_id": "conn_abc123",
    "provider": "s3",
    "source_path": "marketing-assets/campaigns",
    "created_by_user_id": "user_alice",
}

#: Valid data and the model it parses to, for every type this version applies.
VALID: dict[CommandType, tuple[dict[str, Any], type]] = {
    C.CREATE: (CREATE_DATA, CreateData),
    C.UPDATE: ({"polling_interval_seconds": 600}, UpdateData),
    C.ACTIVATE: ({}, ActivateData),
    C.PAUSE: ({"paused_by_user_id": "user_bob"}, PauseData),
    C.RESUME: ({}, ResumeData),
    C.CANCEL: ({}, CancelData),
    C.ARCHIVE: ({}, ArchiveData),
    C.TRIGGER: ({}, TriggerData),
    C.UNLOCK: ({"unlocked_by_user_id": "user_bob", "reason": "worker stuck"}, UnlockData),
    C.RUN_START: ({"worker_id": "worker_1", "lease_seconds": 60}, RunStartData),
    C.RUN_HEARTBEAT: ({"run_id": RUN_ID, "lock_token": 1}, RunHeartbeatData),
    C.RUN_CHECKPOINT: (
        {"run_id": RUN_ID, "lock_token": 1, "resume_cursor": "page-3", "files_synced": 10},
        RunCheckpointData,
    ),
    C.RUN_COMPLETE: (
        {"run_id": RUN_ID, "lock_token": 1, "files_synced": 10, "batch_ids": ["b1"]},
        RunCompleteData,
    ),
    C.RUN_FAIL: ({"run_id": RUN_ID, "lock_token": 1, "error": "boom"}, RunFailData),
    C.BULK_PAUSE: ({"selector": {"bucket_id": "bkt_1"}, "reason": "audit"}, BulkPauseData),
    C.BULK_RESUME: ({"selector": {"metadata": {"team": "a"}}}, BulkResumeData),
    C.BULK_UNDO: ({}, BulkUndoData),
}


def parsed(command_type: CommandType, data: Any) -> Any:
    result = parse_data(command_type, SYNC_ID, data)
    assert not isinstance(result, CommandError), result
    return result


def rejected(command_type: CommandType, data: Any) -> CommandError:
    result = parse_data(command_type, SYNC_ID, data)
    assert isinstance(result, CommandError), result
    return result


def error_fields(error: CommandError) -> set[str]:
    return {e["field"] for e in error.details["errors"]}


def test_every_command_type_is_supported() -> None:
    assert set(VALID) == SUPPORTED_TYPES == set(CommandType)
    assert {t for t in CommandType if t.is_run} == {
        C.RUN_START,
        C.RUN_HEARTBEAT,
        C.RUN_CHECKPOINT,
        C.RUN_COMPLETE,
        C.RUN_FAIL,
    }


@pytest.mark.parametrize("command_type", list(VALID))
def test_valid_data_parses(command_type: CommandType) -> None:
    data, model = VALID[command_type]
    assert isinstance(parsed(command_type, data), model)


def test_create_data_with_every_optional_field() -> None:
    result = parsed(
        C.CREATE,
        {
            **CREATE_DATA,
            "sync_config_id": SYNC_ID,  # allowed when it matches the key
            "sync_mode": "initial_only",
            "polling_interval_seconds": 60,
            "batch_size": 10,
            "create_object_on_confirm": False,
            "skip_duplicates": False,
            "skip_batch_submission": True,
            "metadata": {"team": "marketing"},
            "max_objects_per_run": 5,
            "max_batch_chunk_size": 500,
            "batch_chunk_size": 50,
            "resume_enabled": False,
            "resume_checkpoint_frequency": 200,
            "file_filters": {"include_patterns": ["*.pdf"]},
            "schema_mapping": {
                "mappings": {
                    "title": {"target_type": "field", "source": {"type": "file"}},
                }
            },
            "initial_status": "DRAFT",
            "reason": "set up for review",
        },
    )
    assert isinstance(result, CreateData)
    assert result.provider is Provider.S3
    assert result.sync_mode is SyncMode.INITIAL_ONLY
    assert result.initial_status == SyncStatus.DRAFT
    assert result.file_filters is not None
    assert result.file_filters.include_patterns == ["*.pdf"]


def test_create_initial_status_defaults_to_pending() -> None:
    assert parsed(C.CREATE, CREATE_DATA).initial_status == SyncStatus.PENDING


@pytest.mark.parametrize("status", ["PENDING", "DRAFT", "SUSPENDED"])
def test_create_initial_status_allowed(status: str) -> None:
    assert parsed(C.CREATE, {**CREATE_DATA, "initial_status": status}).initial_status == status


@pytest.mark.parametrize("status", ["ACTIVE", "COMPLETED", "CANCELED", "ARCHIVED", "bogus"])
def test_create_initial_status_refused(status: str) -> None:
    error = rejected(C.CREATE, {**CREATE_DATA, "initial_status": status})
    assert error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(error) == {"initial_status"}


@pytest.mark.parametrize("field", ["bucket_id", "connection_id", "source_path"])
def test_create_required_fields(field: str) -> None:
    data = dict(CREATE_DATA)
    del data[field]
    error = rejected(C.CREATE, data)
    assert error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(error) == {field}


@pytest.mark.parametrize(
    ("command_type", "data"),
    [
        (C.CREATE, {k: v for k, v in CREATE_DATA.items() if k != "provider"}),
        (C.CREATE, {k: v for k, v in CREATE_DATA.items() if k != "created_by_user_id"}),
        (C.PAUSE, {"reason": "audit"}),
        (C.PAUSE, {}),
    ],
)
def test_optional_in_v1_1(command_type: CommandType, data: dict[str, Any]) -> None:
    """provider and the user ids are optional: the decider takes the user from the caller."""
    assert not isinstance(parse_data(command_type, SYNC_ID, data), CommandError)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"status": "PAUSED"}, "status"),
        ({"status": "COMPLETED"}, "status"),
        ({"is_active": "sometimes"}, "is_active"),
        ({"is_active": True, "status": "SUSPENDED"}, "status"),
        ({"is_active": False, "status": "ACTIVE"}, "status"),
        ({"description": 5}, "description"),
        ({"provider": "ftp"}, "provider"),
    ],
)
def test_update_status_fields_rejected(data: dict[str, Any], field: str) -> None:
    error = rejected(C.UPDATE, data)
    assert error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(error) == {field}


def test_trigger_mode_and_start_job() -> None:
    assert rejected(C.TRIGGER, {"mode": "partial"}).code is ErrorCode.VALIDATION_ERROR
    parsed = parse_data(C.TRIGGER, SYNC_ID, {"mode": "full"})
    assert not isinstance(parsed, CommandError) and parsed.mode == "full"  # type: ignore[union-attr]
    start = parse_data(C.RUN_START, SYNC_ID, {"worker_id": "w", "sync_job_id": "job_1"})
    assert not isinstance(start, CommandError)
    # A v1 run id (a UUID in any spelling) is compared in its canonical form.
    beat = parse_data(
        C.RUN_HEARTBEAT,
        SYNC_ID,
        {"run_id": "AB4F0C5E-0E2A-4C84-8E4F-6A2D3C1B0A99", "lock_token": 1},
    )
    assert not isinstance(beat, CommandError)
    assert beat.run_id == "ab4f0c5e-0e2a-4c84-8e4f-6a2d3c1b0a99"  # type: ignore[union-attr]


@pytest.mark.parametrize("command_type", [C.PAUSE, C.CANCEL, C.ARCHIVE, C.CREATE])
def test_reason_at_most_1000_characters(command_type: CommandType) -> None:
    data = dict(VALID[command_type][0])
    assert parsed(command_type, {**data, "reason": "r" * 1000}).reason == "r" * 1000
    error = rejected(command_type, {**data, "reason": "r" * 1001})
    assert error_fields(error) == {"reason"}
    assert error.details["errors"][0]["limit"] == {"max_length": 1000}


# --------------------------------------------------------------------------- tenancy, unknown


@pytest.mark.parametrize("command_type", list(VALID))
@pytest.mark.parametrize("field", ["internal_id", "namespace_id"])
def test_tenancy_fields_in_data_are_rejected(command_type: CommandType, field: str) -> None:
    data, _ = VALID[command_type]
    error = rejected(command_type, {**data, field: "org_other"})
    assert error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(error) == {field}
    assert field in error.message
    assert "org_other" not in json.dumps(error.model_dump(mode="json"))


@pytest.mark.parametrize("command_type", list(VALID))
def test_both_tenancy_fields_are_named(command_type: CommandType) -> None:
    data, _ = VALID[command_type]
    error = rejected(command_type, {**data, "internal_id": "o", "namespace_id": "n"})
    assert error_fields(error) == {"internal_id", "namespace_id"}


@pytest.mark.parametrize("command_type", list(VALID))
def test_sync_config_id_in_data_must_match_the_key(command_type: CommandType) -> None:
    data, _ = VALID[command_type]
    parsed(command_type, {**data, "sync_config_id": SYNC_ID})
    error = rejected(command_type, {**data, "sync_config_id": "sync_other"})
    assert error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(error) == {"sync_config_id"}


@pytest.mark.parametrize("command_type", list(VALID))
def test_unknown_fields_rejected(command_type: CommandType) -> None:
    data, _ = VALID[command_type]
    error = rejected(command_type, {**data, "surprise_field": 1})
    assert error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(error) == {"surprise_field"}
    assert error.details["errors"][0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("command_type", "field"),
    [
        (C.PAUSE, "resumed_by_user_id"),
        (C.RESUME, "paused_by_user_id"),
        (C.CANCEL, "archived_by_user_id"),
        (C.ARCHIVE, "canceled_by_user_id"),
        (C.ACTIVATE, "reason"),
        (C.UPDATE, "initial_status"),
        (C.CREATE, "updated_by_user_id"),
        (C.UPDATE, "status"),
        (C.UPDATE, "version"),
        (C.UPDATE, "is_active"),
    ],
)
def test_fields_of_other_commands_or_state_rejected(command_type: CommandType, field: str) -> None:
    data, _ = VALID[command_type]
    error = rejected(command_type, {**data, field: "x"})
    assert field in error_fields(error)


@pytest.mark.parametrize("command_type", list(VALID))
@pytest.mark.parametrize("data", [[], ["a"], "text", 42, None, 1.5, True])
def test_non_object_data_rejected(command_type: CommandType, data: Any) -> None:
    error = rejected(command_type, data)
    assert error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(error) == {"(root)"}


# --------------------------------------------------------------------------- update


@pytest.mark.parametrize("field", ["bucket_id", "source_path", "created_by_user_id", "created_at"])
def test_update_of_immutable_field_rejected(field: str) -> None:
    error = rejected(C.UPDATE, {"batch_size": 10, field: "anything"})
    assert error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(error) == {field}
    assert "cannot be changed" in error.details["errors"][0]["problem"]


def test_update_of_only_immutable_fields_names_each() -> None:
    error = rejected(
        C.UPDATE, {"bucket_id": "b", "provider": "tigris", "source_path": "other-bucket/p"}
    )
    # provider may be set while it is null: the decider checks it against the sync.
    assert {"bucket_id", "source_path"} == error_fields(error)


@pytest.mark.parametrize("data", [{}, {"updated_by_user_id": "user_bob"}])
def test_empty_update_rejected(data: dict[str, Any]) -> None:
    error = rejected(C.UPDATE, data)
    assert error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(error) == {"(root)"}


@pytest.mark.parametrize(
    "data",
    [
        {"connection_id": "conn_new"},
        {"batch_size": 5},
        {"metadata": {}},
        {"file_filters": None},
        {"sync_mode": "initial_only", "updated_by_user_id": "user_bob"},
        {"file_filters": {"exclude_patterns": ["*.tmp"]}},
    ],
)
def test_partial_update_parses_and_remembers_what_was_set(data: dict[str, Any]) -> None:
    result = parsed(C.UPDATE, data)
    assert isinstance(result, UpdateData)
    assert result.model_fields_set == set(data)


def test_update_does_not_check_limits_itself() -> None:
    """Limits are checked once, against the merged configuration, by ``decide``."""
    assert parsed(C.UPDATE, {"batch_size": 1000}).batch_size == 1000


def test_update_type_errors_name_the_field() -> None:
    error = rejected(C.UPDATE, {"batch_size": "many", "sync_mode": "sometimes"})
    assert error_fields(error) == {"batch_size", "sync_mode"}


# --------------------------------------------------------------------------- unsupported


@pytest.mark.parametrize("trigger", list(SystemTrigger))
@pytest.mark.parametrize("data", [{}, "not an object"])
def test_system_triggers_are_not_commands(trigger: SystemTrigger, data: Any) -> None:
    """Changes the service makes itself are never accepted as command data."""
    result = parse_data(trigger, SYNC_ID, data)  # type: ignore[arg-type]
    assert isinstance(result, CommandError)
    assert result.code is ErrorCode.UNSUPPORTED_TYPE
    assert trigger.value in result.message
    assert result.details["supported_types"] == sorted(t.value for t in VALID)


@pytest.mark.parametrize(
    ("command_type", "field", "value"),
    [
        (C.RUN_START, "lease_seconds", 4),
        (C.RUN_START, "lease_seconds", 86_401),
        (C.RUN_HEARTBEAT, "lock_token", 0),
        (C.RUN_HEARTBEAT, "run_id", ""),
        (C.RUN_HEARTBEAT, "run_id", "x" * 257),
        (C.RUN_CHECKPOINT, "files_synced", -1),
        (C.RUN_COMPLETE, "bytes_synced", -1),
        (C.RUN_FAIL, "error", ""),
        (C.UNLOCK, "reason", "x" * 1001),
        (C.UNLOCK, "unlocked_by_user_id", ""),
    ],
)
def test_run_data_limits(command_type: CommandType, field: str, value: Any) -> None:
    data, _ = VALID[command_type]
    error = rejected(command_type, {**data, field: value})
    assert error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(error) == {field}


def test_validation_errors_do_not_echo_input() -> None:
    secret = "sk_live_DO_NOT_ECHO_0123456789abcdefghij"
    error = rejected(
        C.CREATE,
        {
            **CREATE_DATA,
            "internal_id": secret,
            "provider": secret,
            "reason": secret * 40,
            "batch_size": secret,
        },
    )
    assert error_fields(error) == {"internal_id", "provider", "reason", "batch_size"}
    assert secret not in json.dumps(error.model_dump(mode="json"))
