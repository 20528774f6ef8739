"""The HTTP bodies (events/contract/http.py) against the vendor's SDK (``mixpeek``).

A caller using the SDK must work against synclife by changing only its base URL: every response
our models build parses with the SDK's models, and every body the SDK sends for a typical
request validates in ours (except where the seed's limits are narrower, which is refused).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from mixpeek.models.list_sync_configurations_request import (
    ListSyncConfigurationsRequest as SdkListRequest,
)
from mixpeek.models.list_sync_jobs_request import ListSyncJobsRequest as SdkListJobsRequest
from mixpeek.models.schema_mapping_input import SchemaMappingInput
from mixpeek.models.sync_configuration_model import SyncConfigurationModel as SdkSync
from mixpeek.models.sync_create_request import SyncCreateRequest as SdkCreate
from mixpeek.models.sync_job_list_response import SyncJobListResponse as SdkJobList
from mixpeek.models.sync_job_model import SyncJobModel as SdkJob
from mixpeek.models.sync_job_status import SyncJobStatus as SdkJobStatus
from mixpeek.models.sync_job_trigger import SyncJobTrigger as SdkJobTrigger
from mixpeek.models.sync_list_response import SyncListResponse as SdkList
from mixpeek.models.sync_metrics_response import SyncMetricsResponse as SdkMetrics
from mixpeek.models.sync_update_request import SyncUpdateRequest as SdkUpdate
from mixpeek.models.task_status_enum import TaskStatusEnum
from pydantic import ValidationError

from events.contract.http import (
    REQUEST_MODELS,
    SECRET_FIELDS,
    CommandResultModel,
    ErrorBody,
    ListSyncConfigurationsRequest,
    ListSyncJobsRequest,
    NamespaceListRequest,
    PaginationResponse,
    SyncConfigurationModel,
    SyncCreateRequest,
    SyncJobListResponse,
    SyncJobModel,
    SyncListResponse,
    SyncMetricsResponse,
    SyncUpdateRequest,
    accepted_fields,
    request_error_details,
)
from events.messages import BulkCounts, CommandResult
from statemachine.commands import CommandType
from statemachine.decider import decide
from statemachine.decision import JobStatus, JobTrigger, Outcome
from statemachine.model import SyncConfiguration, SyncSettings
from statemachine.status import SyncStatus
from tests.helpers.syncs import T0, T1, make_command, make_sync

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def created_sync() -> SyncConfiguration:
    """A sync as ``sync.create`` stores it (the decider's own output)."""
    command = make_command(
        CommandType.CREATE,
        {
            "bucket_id": "bkt_marketing_assets",
            "connection_id": "conn_abc123",
            "provider": "s3",
            "source_path": "marketing-assets/campaigns",
            "created_by_user_id": "user_alice",
            "file_filters": {"include_patterns": ["*.mp4"], "max_size_bytes": 10_000_000},
            "schema_mapping": {
                "mappings": {
                    "content": {"target_type": "blob", "source": {"type": "file"}},
                    "category": {"target_type": "field", "source": {"type": "tag", "key": "cat"}},
                }
            },
            "metadata": {"team": "marketing"},
        },
    )
    decision = decide(None, command, NOW)
    assert decision.outcome is Outcome.APPLIED and decision.final is not None
    return decision.final


def running_sync() -> SyncConfiguration:
    """An ACTIVE sync with a run holding the lock (a fencing token stored)."""
    return make_sync(
        status="ACTIVE",
        locked_by_worker_id="worker-7",
        locked_at=T1,
        lock_expires_at=T1,
        lock_token=42,
        current_sync_run_id="job_01J0000000000000000000000A",
        resume_cursor="page-3",
        total_files_discovered=10,
        total_files_failed=1,
        last_sync_at=T1,
    )


def as_json(model: Any) -> str:
    """What the gateway writes: the model's JSON dump."""
    return json.dumps(model.model_dump(mode="json"))


# --- responses ---------------------------------------------------------------------------


@pytest.mark.parametrize("sync", [created_sync(), running_sync()], ids=["created", "running"])
def test_a_stored_sync_parses_with_the_sdk(sync: SyncConfiguration) -> None:
    # From the model and from the stored JSON document alike.
    for source in (sync, json.loads(sync.model_dump_json())):
        view = SyncConfigurationModel.from_sync(source)
        parsed = SdkSync.from_json(as_json(view))
        assert parsed is not None
        assert parsed.sync_config_id == sync.sync_config_id
        assert parsed.status is not None and parsed.status.value == sync.status.value
        assert parsed.locked is (sync.locked_by_worker_id is not None)
        assert parsed.polling_interval_seconds == sync.polling_interval_seconds
        assert parsed.metadata == sync.metadata


def test_a_response_never_carries_a_secret() -> None:
    sync = running_sync()
    assert sync.lock_token == 42
    body = SyncConfigurationModel.from_sync(json.loads(sync.model_dump_json()))
    dumped = body.model_dump(mode="json")
    assert SECRET_FIELDS & dumped.keys() == set()
    assert 42 not in dumped.values()
    assert dumped["locked"] is True and dumped["current_cursor"] == "page-3"
    properties = SyncConfigurationModel.model_json_schema(mode="serialization")["properties"]
    assert SECRET_FIELDS & properties.keys() == set()
    # The result of an operation shows the sync the same way, and no run data.
    result = CommandResult(
        command_id="cmd_1",
        command_type="sync.run.start",
        sync_config_id=sync.sync_config_id,
        outcome=Outcome.APPLIED,
        version=sync.version,
        status=sync.status,
        sync=sync,
        run={"run_id": "job_1", "lock_token": 42},
    )
    shown = CommandResultModel.from_result(result).model_dump(mode="json")
    assert "run" not in shown and "lock_token" not in shown["sync"]


def test_an_operations_result_keeps_the_v1_1_fields_of_the_result() -> None:
    bulk = CommandResult(
        command_id="cmd_1",
        command_type="sync.bulk.pause",
        sync_config_id="bulk_01J9Z3Q8Y7X6W5V4T3S2R1P0NM",
        outcome=Outcome.APPLIED,
        operation_id="bulk_01J9Z3Q8Y7X6W5V4T3S2R1P0NM",
        counts=BulkCounts(matched=3, applied=2, noop=0, rejected=1),
    )
    shown = CommandResultModel.from_result(bulk).model_dump(mode="json")
    assert shown["operation_id"] == "bulk_01J9Z3Q8Y7X6W5V4T3S2R1P0NM"
    assert shown["counts"] == {"matched": 3, "applied": 2, "noop": 0, "rejected": 1}
    resume = CommandResult(
        command_id="cmd_2",
        command_type="sync.resume",
        sync_config_id="sync_1",
        outcome=Outcome.APPLIED,
        holds=["maintenance:X"],
        sync_job_id="job_1",
    )
    shown = CommandResultModel.from_result(resume).model_dump(mode="json")
    assert (shown["holds"], shown["sync_job_id"]) == (["maintenance:X"], "job_1")
    assert shown["operation_id"] is None and shown["counts"] is None
    properties = CommandResultModel.model_json_schema(mode="serialization")["properties"]
    assert {"operation_id", "counts", "holds", "sync_job_id"} <= properties.keys()


def test_every_stored_field_but_the_secrets_is_shown() -> None:
    shown = set(SyncConfigurationModel.model_fields)
    assert set(SyncConfiguration.model_fields) - SECRET_FIELDS <= shown
    assert {"locked", "current_cursor"} <= shown


def test_a_read_shows_what_is_stored_without_the_write_limits() -> None:
    # A value the seed's limits would refuse today (stored by an older version, say) and a
    # sync without a provider still read back as they are.
    stored = json.loads(make_sync().model_dump_json())
    stored.update(polling_interval_seconds=86_400, provider=None, batch_size=500)
    view = SyncConfigurationModel.from_sync(stored).model_dump(mode="json")
    assert view["polling_interval_seconds"] == 86_400
    assert view["provider"] is None
    schema = SyncConfigurationModel.model_json_schema(mode="serialization")["properties"]
    assert "maximum" not in schema["polling_interval_seconds"]
    # An unknown stored key is dropped, not passed on.
    stored["internal_note"] = "x"
    assert "internal_note" not in SyncConfigurationModel.from_sync(stored).model_dump()


def test_the_list_response_parses_with_the_sdk() -> None:
    syncs = [SyncConfigurationModel.from_sync(s) for s in (running_sync(), created_sync())]
    body = SyncListResponse(
        results=syncs,
        pagination=PaginationResponse(page=1, page_size=50, next_cursor="c2"),
        total=2,
    )
    parsed = SdkList.from_json(as_json(body))
    assert parsed is not None and parsed.total == 2
    ours = [s.model_dump()["sync_config_id"] for s in syncs]
    assert [s.sync_config_id for s in parsed.results] == ours
    assert parsed.pagination.next_cursor == "c2" and parsed.pagination.total is None


def job(**overrides: Any) -> SyncJobModel:
    fields: dict[str, Any] = {
        "sync_job_id": "job_01J0000000000000000000000A",
        "sync_config_id": "sync_01HZX3T5ZQ8Y4V9B2M6N7P0QRS",
        "internal_id": "org_acme",
        "namespace_id": "ns_marketing",
        "status": "completed",
        "phase": None,
        "trigger": "manual",
        "files_synced": 9,
        "files_failed": 1,
        "started_at": T0,
        "completed_at": T1,
        "updated_at": T1,
        "current_cursor": "page-9",
    }
    fields.update(overrides)
    return SyncJobModel.model_validate(fields)


def test_jobs_parse_with_the_sdk() -> None:
    one = SdkJob.from_json(as_json(job()))
    assert one is not None and one.status is SdkJobStatus.COMPLETED
    assert one.trigger is SdkJobTrigger.MANUAL and one.files_synced == 9
    queued = job(status="running", phase="queued", trigger="scheduled", started_at=None)
    page = SyncJobListResponse(
        results=[queued, job()], pagination=PaginationResponse(page=1, page_size=2), total=2
    )
    parsed = SdkJobList.from_json(as_json(page))
    assert parsed is not None and parsed.total == 2
    assert parsed.results[0].phase == "queued" and parsed.results[0].started_at is None


def test_job_status_and_trigger_values_are_the_sdks() -> None:
    assert {s.value for s in JobStatus} <= {s.value for s in SdkJobStatus}
    assert {t.value for t in JobTrigger} <= {t.value for t in SdkJobTrigger}


def test_metrics_parse_with_the_sdk() -> None:
    body = SyncMetricsResponse(
        sync_config_id="sync_01HZX3T5ZQ8Y4V9B2M6N7P0QRS",
        status=SyncStatus.ACTIVE,
        is_active=True,
        total_files_discovered=10,
        total_files_failed=1,
        last_sync_at=T1,
        seconds_since_last_sync=700,
        is_stale=True,
        intervals_since_last_sync=2.33,
        stale_after_seconds=600,
        failure_rate=0.1,
        healthy=False,
        last_job=job(),
    )
    parsed = SdkMetrics.from_json(as_json(body))
    assert parsed is not None and parsed.is_stale is True and parsed.healthy is False
    assert parsed.last_job is not None and parsed.last_job["sync_job_id"] == job().sync_job_id
    assert parsed.failure_rate == 0.1 and parsed.status == "ACTIVE"


def test_every_sync_status_is_a_value_of_the_sdks_task_status() -> None:
    assert {s.value for s in SyncStatus} <= {s.value for s in TaskStatusEnum}


def test_the_error_body_is_the_vendors() -> None:
    body = ErrorBody.model_validate(
        {
            "success": False,
            "status": 404,
            "error": {"message": "no such sync", "type": "not_found", "code": None},
        }
    )
    assert body.model_dump(mode="json") == {
        "success": False,
        "status": 404,
        "error": {"message": "no such sync", "type": "not_found", "code": None, "details": {}},
    }
    with pytest.raises(ValidationError):
        ErrorBody.model_validate({"success": True, "status": 404, "error": body.error})


# --- requests ----------------------------------------------------------------------------


def sdk_create(**fields: Any) -> dict[str, Any]:
    request = SdkCreate(connection_id="conn_abc123", source_path="marketing-assets/x", **fields)
    body: dict[str, Any] = request.to_dict()
    return body


def test_the_sdks_create_bodies_validate() -> None:
    mapping = SchemaMappingInput.from_dict(
        {"mappings": {"content": {"target_type": "blob", "source": {"type": "file"}}}}
    )
    bodies = [
        sdk_create(),
        sdk_create(
            sync_mode="initial_only",
            file_filters={"include_patterns": ["*.pdf"], "mime_types": ["application/pdf"]},
            schema_mapping=mapping,
            polling_interval_seconds=900,
            batch_size=100,
            skip_batch_submission=True,
            skip_duplicates=False,
            max_objects_per_run=5000,
            metadata={"team": "marketing"},
            description="campaign assets",
        ),
    ]
    for body in bodies:
        request = SyncCreateRequest.model_validate(body)
        data = request.command_data()
        # What the body said is what the command gets (the SDK's defaults included).
        for key, value in body.items():
            assert data[key] == value, key
    assert "provider" not in SyncCreateRequest.model_validate(bodies[0]).command_data()


@pytest.mark.parametrize(
    ("fields", "field", "error"),
    [
        ({"polling_interval_seconds": 3600}, "polling_interval_seconds", "less_than_equal"),
        ({"polling_interval_seconds": 86_400}, "polling_interval_seconds", "less_than_equal"),
        ({"description": "d" * 501}, "description", "string_too_long"),
        ({"metadata": {f"k{i}": i for i in range(51)}}, "metadata", "too_long"),
        ({"batch_collection_ids": ["col_1"]}, "batch_collection_ids", "extra_forbidden"),
        ({"sync_concurrency": 4}, "sync_concurrency", "extra_forbidden"),
    ],
)
def test_where_the_seeds_limits_are_narrower_the_sdks_body_is_refused(
    fields: dict[str, Any], field: str, error: str
) -> None:
    # The SDK allows these; synclife keeps the seed's limits and knows no such fields.
    body = sdk_create(**fields)
    with pytest.raises(ValidationError) as caught:
        SyncCreateRequest.model_validate(body)
    assert (field, error) in {(str(e["loc"][0]), e["type"]) for e in caught.value.errors()}


def test_the_limits_are_the_configurations() -> None:
    create = SyncCreateRequest.model_json_schema()["properties"]
    stored = SyncSettings.model_json_schema()["properties"]
    for name in ("polling_interval_seconds", "batch_size", "max_objects_per_run"):
        limits = {k: v for k, v in stored[name].items() if k in ("minimum", "maximum")}
        assert limits, name
        assert any(limits.items() <= option.items() for option in create[name]["anyOf"]), name


def test_the_sdks_update_bodies_validate() -> None:
    mapping = SchemaMappingInput.from_dict(
        {"mappings": {"cat": {"target_type": "field", "source": {"type": "tag", "key": "c"}}}}
    )
    bodies = [
        SdkUpdate(description="new", metadata={"a": 1}).to_dict(),
        SdkUpdate(is_active=False).to_dict(),
        SdkUpdate(status=TaskStatusEnum.ACTIVE, polling_interval_seconds=60).to_dict(),
        SdkUpdate(
            batch_size=10,
            schema_mapping=mapping,
            skip_batch_submission=True,
            max_objects_per_run=10,
        ).to_dict(),
    ]
    for body in bodies:
        assert SyncUpdateRequest.model_validate(body).command_data() == body


def test_an_update_is_partial_and_changes_something() -> None:
    with pytest.raises(ValidationError, match="at least one field"):
        SyncUpdateRequest.model_validate({})
    refused = SdkUpdate(status=TaskStatusEnum.COMPLETED).to_dict()
    with pytest.raises(ValidationError) as caught:
        SyncUpdateRequest.model_validate(refused)
    assert [e["loc"] for e in caught.value.errors()] == [("status",)]
    with pytest.raises(ValidationError):
        SyncUpdateRequest.model_validate(SdkUpdate(polling_interval_seconds=1000).to_dict())


def test_list_filters_accept_the_sdks_bodies() -> None:
    body = SdkListRequest(
        connection_id="conn_abc123", status=TaskStatusEnum.SUSPENDED, is_active=False
    ).to_dict()
    assert ListSyncConfigurationsRequest.model_validate(body).status == "SUSPENDED"
    assert ListSyncConfigurationsRequest.model_validate(SdkListRequest().to_dict()) is not None
    jobs = SdkListJobsRequest(status=SdkJobStatus.FAILED).to_dict()
    assert ListSyncJobsRequest.model_validate(jobs).status == "failed"
    mine = NamespaceListRequest.model_validate({"bucket_id": "bkt_a", "provider": "s3"})
    assert mine.is_stale is None and mine.provider is not None


def test_status_filters_take_every_value_of_the_sdks_enums() -> None:
    """A filter on a status no sync (or job) takes matches nothing; it is not a 422."""
    for value in TaskStatusEnum:
        for model in (ListSyncConfigurationsRequest, NamespaceListRequest):
            assert model.model_validate({"status": value.value}).status == value.value
    assert {s.value for s in SyncStatus} <= {s.value for s in TaskStatusEnum}
    for job_status in SdkJobStatus:
        assert ListSyncJobsRequest.model_validate({"status": job_status.value}).status == (
            job_status.value
        )
    with pytest.raises(ValidationError):
        ListSyncConfigurationsRequest.model_validate({"status": "active"})


def test_include_total_in_the_list_bodies() -> None:
    for model in (ListSyncConfigurationsRequest, NamespaceListRequest, ListSyncJobsRequest):
        assert model.model_validate({"include_total": True}).include_total is True
        assert model.model_validate({}).include_total is None


@pytest.mark.parametrize(
    "text", ["a\x00b", "\x00", "\ud800", "x\udfff", "\x1b[31m", "a\nb", "c" * 257]
)
@pytest.mark.parametrize(
    ("model", "name"),
    [
        (ListSyncConfigurationsRequest, "connection_id"),
        (NamespaceListRequest, "connection_id"),
        (NamespaceListRequest, "bucket_id"),
    ],
)
def test_a_filter_no_id_can_be_is_refused_naming_it(model: Any, name: str, text: str) -> None:
    """The rule of path ids: printable, UTF-8 encodable, no U+0000, at most 256 characters
    (Postgres stores no U+0000 and asyncpg encodes no surrogate: never sent to it)."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate({name: text})
    assert [e["loc"] for e in caught.value.errors()] == [(name,)]
    assert model.model_validate({name: "c" * 256}) is not None
    assert model.model_validate({name: "conn \u00e9t\u00e9"}) is not None


@pytest.mark.parametrize("model", REQUEST_MODELS, ids=lambda m: m.__name__)
def test_every_request_refuses_an_unknown_key_naming_the_accepted_ones(model: Any) -> None:
    body: dict[str, Any] = {"not_a_field": 1}
    if model is SyncCreateRequest:
        body.update(connection_id="conn_1", source_path="x/y")
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    assert ("not_a_field",) in {e["loc"] for e in caught.value.errors()}
    assert {e["type"] for e in caught.value.errors()} == {"extra_forbidden"}
    details = request_error_details(model, caught.value)
    assert details == {"accepted_fields": accepted_fields(model)}
    assert "not_a_field" not in details["accepted_fields"]
    if model is SyncCreateRequest:
        assert {"connection_id", "source_path", "provider"} <= set(details["accepted_fields"])


def test_a_bad_value_alone_names_no_accepted_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        SyncUpdateRequest.model_validate({"batch_size": 0})
    assert request_error_details(SyncUpdateRequest, caught.value) == {}
