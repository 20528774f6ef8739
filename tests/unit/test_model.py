"""Fields, defaults and limits of ``SyncSettings`` / ``SyncConfiguration`` (the seed's model)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from statemachine.errors import validation_details
from statemachine.model import (
    MUTABLE_FIELDS,
    Provider,
    SyncConfiguration,
    SyncMode,
    SyncSettings,
    check_source_path,
)
from statemachine.status import SYNC_STATUSES, SyncStatus
from tests.helpers.syncs import make_sync, sync_fields

MODELS: list[type[BaseModel]] = [SyncSettings, SyncConfiguration]


def base_fields(model: type[BaseModel], **overrides: Any) -> dict[str, Any]:
    """Minimal valid input for ``model`` with ``overrides``."""
    if model is SyncSettings:
        return {"connection_id": "conn_abc123", **overrides}
    return sync_fields(**overrides)


def details_of(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return validation_details(info.value)


def only_error(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    errors: list[dict[str, Any]] = details_of(model, data)["errors"]
    assert len(errors) == 1, errors
    return errors[0]


# --------------------------------------------------------------------------- numeric limits

# (field, lowest accepted, highest accepted or None, extra fields needed at the bounds)
SETTINGS_LIMITS: list[tuple[str, int, int | None, dict[str, Any]]] = [
    ("polling_interval_seconds", 30, 900, {}),
    ("batch_size", 1, 100, {}),
    ("max_objects_per_run", 1, None, {}),
    # batch_chunk_size (default 100) must stay <= max_batch_chunk_size at its low bound.
    ("max_batch_chunk_size", 1, 1000, {"batch_chunk_size": 1}),
    ("batch_chunk_size", 1, 1000, {"max_batch_chunk_size": 1000}),
    ("resume_checkpoint_frequency", 100, 10_000, {}),
]

COUNTERS = [
    "total_files_discovered",
    "total_files_synced",
    "total_files_failed",
    "total_bytes_synced",
    "consecutive_failures",
    "sync_run_counter",
    "batches_created",
    "resume_objects_processed",
]

CONFIG_LIMITS: list[tuple[str, int, int | None, dict[str, Any]]] = [
    *[(name, 0, None, {}) for name in COUNTERS],
    ("version", 1, None, {}),
]


def limit_cases() -> list[Any]:
    cases = []
    for model in MODELS:
        for field, low, high, extra in SETTINGS_LIMITS:
            cases.append(
                pytest.param(model, field, low, high, extra, id=f"{model.__name__}-{field}")
            )
    for field, low, high, extra in CONFIG_LIMITS:
        cases.append(pytest.param(SyncConfiguration, field, low, high, extra, id=f"config-{field}"))
    return cases


@pytest.mark.parametrize(("model", "field", "low", "high", "extra"), limit_cases())
def test_numeric_limit_accepted_at_its_bounds(
    model: type[BaseModel], field: str, low: int, high: int | None, extra: dict[str, Any]
) -> None:
    for value in (low, high if high is not None else 10**12):
        built = model.model_validate(base_fields(model, **extra, **{field: value}))
        assert getattr(built, field) == value


@pytest.mark.parametrize(("model", "field", "low", "high", "extra"), limit_cases())
def test_numeric_limit_rejected_one_past_it(
    model: type[BaseModel], field: str, low: int, high: int | None, extra: dict[str, Any]
) -> None:
    error = only_error(model, base_fields(model, **extra, **{field: low - 1}))
    assert error["field"] == field
    assert error["limit"] == {"ge": low}
    assert "input" not in error
    if high is not None:
        error = only_error(model, base_fields(model, **extra, **{field: high + 1}))
        assert error["field"] == field
        assert error["limit"] == {"le": high}
        assert "input" not in error


@pytest.mark.parametrize("model", MODELS)
def test_batch_chunk_size_at_most_max_batch_chunk_size(model: type[BaseModel]) -> None:
    equal = model.model_validate(base_fields(model, max_batch_chunk_size=250, batch_chunk_size=250))
    assert equal.batch_chunk_size == equal.max_batch_chunk_size == 250  # type: ignore[attr-defined]
    # Past the other field's value: the error names batch_chunk_size and the limit it broke.
    error = only_error(model, base_fields(model, max_batch_chunk_size=250, batch_chunk_size=251))
    assert error["field"] == "batch_chunk_size"
    assert error["limit"] == {"le": 250}
    assert "251" not in json.dumps(error)
    # The default batch_chunk_size (100) is over a lowered max_batch_chunk_size.
    error = only_error(model, base_fields(model, max_batch_chunk_size=99))
    assert error["field"] == "batch_chunk_size"
    assert error["limit"] == {"le": 99}


@pytest.mark.parametrize("model", MODELS)
def test_metadata_at_most_50_keys(model: type[BaseModel]) -> None:
    fifty = {f"k{i}": i for i in range(50)}
    assert model.model_validate(base_fields(model, metadata=fifty)).metadata == fifty  # type: ignore[attr-defined]
    error = only_error(model, base_fields(model, metadata={**fifty, "k50": 50}))
    assert error["field"] == "metadata"
    assert error["limit"] == {"max_length": 50}


def test_last_error_at_most_1000_characters() -> None:
    assert make_sync(last_error="e" * 1000).last_error == "e" * 1000
    error = only_error(SyncConfiguration, sync_fields(last_error="e" * 1001))
    assert error["field"] == "last_error"
    assert error["limit"] == {"max_length": 1000}


# --------------------------------------------------------------------------- defaults

SETTINGS_DEFAULTS: dict[str, Any] = {
    "description": None,
    "file_filters": None,
    "schema_mapping": None,
    "sync_mode": SyncMode.CONTINUOUS,
    "polling_interval_seconds": 300,
    "batch_size": 50,
    "create_object_on_confirm": True,
    "skip_duplicates": True,
    "skip_batch_submission": False,
    "metadata": {},
    "max_objects_per_run": 100_000,
    "max_batch_chunk_size": 1000,
    "batch_chunk_size": 100,
    "resume_enabled": True,
    "resume_checkpoint_frequency": 1000,
}

CONFIG_DEFAULTS: dict[str, Any] = {
    "status": SyncStatus.PENDING,
    "is_active": False,
    "paused": False,
    "pause_reason": None,
    "paused_at": None,
    "paused_by_user_id": None,
    **dict.fromkeys(COUNTERS, 0),
    "last_error": None,
    "last_sync_at": None,
    "next_sync_at": None,
    "locked_by_worker_id": None,
    "locked_at": None,
    "lock_expires_at": None,
    "current_sync_run_id": None,
    "locked": False,
    "pending_full_sync": False,
    "queued_sync_job_id": None,
    "queued_full_sync": False,
    "batch_ids": [],
    "task_ids": [],
    "resume_cursor": None,
    "resume_last_primary_key": None,
    "version": 1,
}


@pytest.mark.parametrize("model", MODELS)
def test_defaults_are_the_tables(model: type[BaseModel]) -> None:
    built = model.model_validate(base_fields(model))
    for field, expected in SETTINGS_DEFAULTS.items():
        assert getattr(built, field) == expected, field
    # Every configurable field has a default listed above (connection_id is required).
    assert set(SyncSettings.model_fields) - {"connection_id"} == set(SETTINGS_DEFAULTS)
    assert set(SETTINGS_DEFAULTS) | {"connection_id"} == MUTABLE_FIELDS


def test_configuration_state_defaults() -> None:
    sync = SyncConfiguration.model_validate(
        {
            "sync_config_id": "sync_abc",
            "bucket_id": "bkt_marketing_assets",
            "connection_id": "conn_abc123",
            "internal_id": "org_acme",
            "namespace_id": "ns_marketing",
            "provider": "google_drive",
            "source_path": "1AbCdEfGhIjKlMnOp",
            "created_by_user_id": "user_alice",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }
    )
    for field, expected in CONFIG_DEFAULTS.items():
        assert getattr(sync, field) == expected, field


@pytest.mark.parametrize(
    "field",
    [
        "sync_config_id",
        "bucket_id",
        "connection_id",
        "internal_id",
        "namespace_id",
        "source_path",
        "created_by_user_id",
        "created_at",
        "updated_at",
    ],
)
def test_required_configuration_fields(field: str) -> None:
    data = sync_fields()
    del data[field]
    error = only_error(SyncConfiguration, data)
    assert error["field"] == field
    assert error["type"] == "missing"


def test_models_are_frozen_and_forbid_unknown_fields() -> None:
    sync = make_sync()
    with pytest.raises(ValidationError):
        sync.batch_size = 10  # type: ignore[misc]
    for model in MODELS:
        error = only_error(model, base_fields(model, surprise=1))
        assert error["field"] == "surprise"
        assert error["type"] == "extra_forbidden"


def test_sync_config_id_format() -> None:
    assert make_sync(sync_config_id="sync_01HZX3T5ZQ").sync_config_id == "sync_01HZX3T5ZQ"
    for bad in ("01HZX3T5ZQ", "sync_", "sync_has space", "SYNC_abc"):
        error = only_error(SyncConfiguration, sync_fields(sync_config_id=bad))
        assert error["field"] == "sync_config_id"
        assert "pattern" in error["limit"]


# --------------------------------------------------------------------------- source_path

VALID_SOURCE_PATHS: dict[Provider, list[str]] = {
    Provider.S3: ["marketing-assets", "marketing-assets/campaigns/2024/", "a.b-c/x", "abc"],
    Provider.TIGRIS: ["media-bucket", "media-bucket/raw/images", "m01/p"],
    Provider.GOOGLE_DRIVE: ["1AbCdEfGhIjKlMnOpQrStUvWxYz", "0B_folder-id", "x"],
    Provider.SHAREPOINT: [
        "/sites/Marketing/Shared Documents",
        "/sites/Marketing",
        "/sites/Team Site/Documents/Campaigns/2024",
    ],
    Provider.SNOWFLAKE: ["ANALYTICS.PUBLIC.EVENTS", "db.schema.table", '"My DB".PUBLIC."Tbl 1"'],
}

INVALID_SOURCE_PATHS: dict[Provider, list[str]] = {
    Provider.S3: ["s3://marketing-assets/x", "Marketing_Assets/x", "ab", "bucket name/x", "/x"],
    Provider.TIGRIS: ["-bucket/x", "UPPER/x", "a", "bucket/with space"],
    Provider.GOOGLE_DRIVE: ["folder/id", "has space", "x" * 257, "/sites/Marketing"],
    Provider.SHAREPOINT: ["sites/Marketing", "/teams/Marketing", "/sites/", "Marketing"],
    Provider.SNOWFLAKE: ["DB.TABLE", "A.B.C.D", "1DB.SCHEMA.TABLE", "DB..TABLE", "DB/SCHEMA/T"],
}


def test_every_provider_has_examples() -> None:
    assert set(VALID_SOURCE_PATHS) == set(Provider) == set(INVALID_SOURCE_PATHS)


@pytest.mark.parametrize(
    ("provider", "path"),
    [(p, path) for p, paths in VALID_SOURCE_PATHS.items() for path in paths],
)
def test_valid_source_path(provider: Provider, path: str) -> None:
    assert check_source_path(provider, path) == path
    assert make_sync(provider=provider, source_path=path).source_path == path


@pytest.mark.parametrize(
    ("provider", "path"),
    [(p, path) for p, paths in INVALID_SOURCE_PATHS.items() for path in paths],
)
def test_invalid_source_path(provider: Provider, path: str) -> None:
    with pytest.raises(ValueError, match=f"provider {provider.value}"):
        check_source_path(provider, path)
    error = only_error(SyncConfiguration, sync_fields(provider=provider, source_path=path))
    assert error["field"] == "source_path"
    assert provider.value in error["problem"]


def test_source_path_error_reported_with_other_field_errors() -> None:
    details = details_of(SyncConfiguration, sync_fields(source_path="Not A Bucket", batch_size=0))
    assert {e["field"] for e in details["errors"]} == {"source_path", "batch_size"}


# --------------------------------------------------------------------------- derived flags


@pytest.mark.parametrize("status", sorted(SYNC_STATUSES))
def test_flags_agree_with_status(status: SyncStatus) -> None:
    sync = make_sync(status=status)
    assert sync.is_active is (status is SyncStatus.ACTIVE)
    assert sync.paused is (status is SyncStatus.SUSPENDED)
    error = only_error(SyncConfiguration, sync_fields(status=status, is_active=not sync.is_active))
    assert "is_active" in error["problem"]
    error = only_error(SyncConfiguration, sync_fields(status=status, paused=not sync.paused))
    assert "paused" in error["problem"]


# --------------------------------------------------------------------------- validation_details


def test_validation_details_names_fields_and_limits_without_echoing_input() -> None:
    secret = "sk_live_DO_NOT_ECHO_0123456789abcdefghij"
    details = details_of(
        SyncConfiguration,
        sync_fields(
            polling_interval_seconds=29,
            batch_size=987_654_321,
            resume_checkpoint_frequency=10_001,
            metadata={f"{secret}{i}": secret for i in range(51)},
            last_error=secret * 30,
            connection_id="",
            bucket_id=secret * 10,
            source_path=f"s3://{secret}",
            total_bytes_synced=-1,
            version=0,
        ),
    )
    by_field = {e["field"]: e for e in details["errors"]}
    assert set(by_field) == {
        "polling_interval_seconds",
        "batch_size",
        "resume_checkpoint_frequency",
        "metadata",
        "last_error",
        "connection_id",
        "bucket_id",
        "source_path",
        "total_bytes_synced",
        "version",
    }
    assert by_field["polling_interval_seconds"]["limit"] == {"ge": 30}
    assert by_field["batch_size"]["limit"] == {"le": 100}
    assert by_field["resume_checkpoint_frequency"]["limit"] == {"le": 10_000}
    assert by_field["metadata"]["limit"] == {"max_length": 50}
    assert by_field["last_error"]["limit"] == {"max_length": 1000}
    assert by_field["connection_id"]["limit"] == {"min_length": 1}
    assert by_field["bucket_id"]["limit"] == {"max_length": 256}
    assert by_field["total_bytes_synced"]["limit"] == {"ge": 0}
    assert by_field["version"]["limit"] == {"ge": 1}
    for entry in details["errors"]:
        assert set(entry) <= {"field", "problem", "type", "limit"}
        assert isinstance(entry["problem"], str) and entry["problem"]
    text = json.dumps(details)  # also proves the details are JSON-serializable
    assert secret not in text
    assert "987654321" not in text


def test_validation_details_prefix_and_root() -> None:
    with pytest.raises(ValidationError) as info:
        SyncConfiguration.model_validate(sync_fields(status=SyncStatus.ACTIVE, is_active=False))
    details = validation_details(info.value, prefix=("sync",))
    assert [e["field"] for e in details["errors"]] == ["sync"]
    details = validation_details(info.value)
    assert [e["field"] for e in details["errors"]] == ["(root)"]
    with pytest.raises(ValidationError) as info:
        SyncSettings.model_validate({"connection_id": "c", "batch_size": 0})
    details = validation_details(info.value, prefix=("data",))
    assert details["errors"][0]["field"] == "data.batch_size"
