"""The HTTP API's bodies: the vendor's model names and fields, built from the state machine's.

A caller written against the vendor's SDK (``mixpeek``) works against synclife by changing only
its base URL, so every name here is the vendor's. The models are not written out again:

- ``SyncConfigurationModel`` (every read) is ``SyncConfiguration``'s fields with their limits
  taken off (a read shows what is stored), ``provider`` nullable, the secrets
  (``SECRET_FIELDS``: the run lock's fencing token) left out, and the SDK's required ``locked``.
  A field added to ``SyncConfiguration`` appears here by itself.
- The write bodies (``SyncCreateRequest``, ``SyncUpdateRequest``) take the fields of the
  commands they become (``CreateData``, ``UpdateData``) with the limits of the configuration
  (``SyncSettings``): the seed's limits win (``polling_interval_seconds`` 30..900 where the SDK
  allows 86,400). Every request body refuses a key it does not declare (``extra_forbidden``).

Pure pydantic: imported by the gateway, the OpenAPI document and tests, never a server library.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo

from events.contract.filters import FilterText, JobStatusFilter, TaskStatusFilter
from events.messages import BulkCounts, CommandResult
from statemachine.commands import CreateData, HoldLabel, Reason, UpdateData, UserId
from statemachine.decision import JobPhase, JobStatus, JobTrigger, Outcome
from statemachine.durations import Until
from statemachine.errors import ErrorCode
from statemachine.model import Provider, SyncConfiguration, SyncSettings
from statemachine.status import SyncStatus

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_OFFSET",
    "REQUEST_MODELS",
    "RESPONSE_MODELS",
    "SECRET_FIELDS",
    "CommandErrorModel",
    "CommandResultModel",
    "DeleteResponse",
    "ErrorBody",
    "ErrorDetail",
    "ListSyncConfigurationsRequest",
    "ListSyncJobsRequest",
    "NamespaceListRequest",
    "OperationResponse",
    "PaginationResponse",
    "PauseRequest",
    "ResumeRequest",
    "SyncConfigurationModel",
    "SyncCreateRequest",
    "SyncHistoryEntry",
    "SyncHistoryResponse",
    "SyncJobListResponse",
    "SyncJobModel",
    "SyncListResponse",
    "SyncMetricsResponse",
    "SyncUpdateRequest",
    "TriggerResponse",
    "accepted_fields",
    "request_error_details",
]

#: Fields of the stored sync that never leave the service in an HTTP body.
SECRET_FIELDS: Final[frozenset[str]] = frozenset({"lock_token"})
#: Paging bounds of the list routes: ``limit`` (``page_size``) 1..MAX_LIMIT, ``offset``
#: 0..MAX_OFFSET.
MAX_LIMIT: Final = 1000
MAX_OFFSET: Final = 10_000
#: Items per page when neither ``limit`` nor ``page_size`` is given (the vendor's default).
DEFAULT_LIMIT: Final = 10

# Fields a read may show as null although a write must set them (a sync created without a
# provider has none until an update sets it).
_NULLABLE_ON_READ: Final = frozenset({"provider"})
# Fields of the read model that are not copied from the stored model.
_DERIVED: Final = frozenset({"locked", "current_cursor"})
# Command fields the HTTP body never carries: the path, the key and the route give them.
_NOT_IN_CREATE: Final = frozenset({"bucket_id", "created_by_user_id", "initial_status", "reason"})
_NOT_IN_UPDATE: Final = frozenset({"updated_by_user_id"})


class _Request(BaseModel):
    """A request body: frozen, and a key it does not declare is refused (``extra_forbidden``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class _Response(BaseModel):
    """A response body. A key it does not know is dropped, never passed on."""

    model_config = ConfigDict(frozen=True, extra="ignore")


# --------------------------------------------------------------------------- the sync


def _read_field(name: str, info: FieldInfo) -> tuple[Any, Any]:
    """A stored field as a read shows it: its type and default, without its limits."""
    annotation: Any = info.annotation
    if name in _NULLABLE_ON_READ:
        annotation = annotation | None
    if info.default_factory is not None:
        return annotation, Field(default_factory=info.default_factory, description=info.description)
    if info.is_required():
        return annotation, Field(description=info.description)
    return annotation, Field(default=info.default, description=info.description)


_READ_FIELDS: Final = {
    name: _read_field(name, info)
    for name, info in SyncConfiguration.model_fields.items()
    if name not in SECRET_FIELDS | _DERIVED
}

if TYPE_CHECKING:
    _SyncFields = _Response
else:
    _SyncFields = create_model("SyncFields", __base__=_Response, **_READ_FIELDS)


class SyncConfigurationModel(_SyncFields):
    """A sync configuration as every read and write answers it: the stored sync, its secrets
    left out, plus ``locked`` (a run holds the lock) and ``current_cursor`` (the resume
    cursor, as the vendor names it in progress views). Build it with ``from_sync``."""

    locked: bool = Field(description="A run holds the sync's run lock.")
    current_cursor: str | None = Field(
        default=None, description="Where the next run resumes (a mirror of resume_cursor)."
    )

    @classmethod
    def from_sync(cls, sync: SyncConfiguration | Mapping[str, Any]) -> Self:
        """The response view of a stored sync (its JSON document, or the model)."""
        data = sync.model_dump() if isinstance(sync, SyncConfiguration) else dict(sync)
        for name in SECRET_FIELDS:
            data.pop(name, None)
        data["locked"] = data.get("locked_by_worker_id") is not None
        data["current_cursor"] = data.get("resume_cursor")
        return cls.model_validate(data)


# --------------------------------------------------------------------------- write bodies


def _write_field(name: str, command: type[BaseModel], required: bool) -> tuple[Any, Any]:
    """A body field: the configuration's type and limits where it has the field (else the
    command's), optional (None: unchanged, or the default) unless ``required``."""
    stored = SyncConfiguration.model_fields
    if name in SyncSettings.model_fields or name == "source_path":
        info = stored[name]
    else:
        info = command.model_fields[name]
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[(annotation, *info.metadata)]
    if required:
        return annotation, Field(description=info.description)
    return annotation | None, Field(default=None, description=info.description)


def _body_fields(
    command: type[BaseModel], leave_out: frozenset[str], required: frozenset[str]
) -> dict[str, Any]:
    names = [n for n in command.model_fields if n not in leave_out]
    names.sort(key=lambda n: n not in required)  # the required ones first, as the vendor's
    return {name: _write_field(name, command, name in required) for name in names}


if TYPE_CHECKING:
    _CreateFields = _Request
    _UpdateFields = _Request
else:
    _CreateFields = create_model(
        "CreateFields",
        __base__=_Request,
        **_body_fields(CreateData, _NOT_IN_CREATE, frozenset({"connection_id", "source_path"})),
    )
    _UpdateFields = create_model(
        "UpdateFields", __base__=_Request, **_body_fields(UpdateData, _NOT_IN_UPDATE, frozenset())
    )


class SyncCreateRequest(_CreateFields):
    """``POST /v1/buckets/{bucket_id}/syncs``: the vendor's create body, plus synclife's
    optional ``provider`` (then ``source_path`` must have its format) and the other settings
    of the configuration. The bucket comes from the path, the user from the API key."""

    def command_data(self) -> dict[str, Any]:
        """The ``sync.create`` data of this body (without the path's bucket and the user)."""
        return self.model_dump(mode="json", exclude_unset=True)


class SyncUpdateRequest(_UpdateFields):
    """``PATCH /v1/buckets/{bucket_id}/syncs/{sync_config_id}``: the fields to change (at
    least one). ``metadata`` and ``schema_mapping`` replace the stored ones. ``is_active``
    false or ``status`` SUSPENDED is also a plain pause, ``is_active`` true or ``status``
    ACTIVE a plain resume."""

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("an update must change at least one field")
        return self

    def command_data(self) -> dict[str, Any]:
        """The ``sync.update`` data of this body (without the user)."""
        return self.model_dump(mode="json", exclude_unset=True)


_INCLUDE_TOTAL: Final = "Count every match (`pagination.total`); the same as ?include_total=true."


class ListSyncConfigurationsRequest(_Request):
    """The filters of a bucket's list (all optional, combined with AND), and
    ``include_total`` (in the body, or as the query parameter)."""

    connection_id: FilterText | None = None
    status: TaskStatusFilter | None = None
    is_active: bool | None = None
    include_total: bool | None = Field(default=None, description=_INCLUDE_TOTAL)


class NamespaceListRequest(ListSyncConfigurationsRequest):
    """The filters of the namespace-wide list ``POST /v1/syncs/list`` (synclife's own)."""

    bucket_id: FilterText | None = None
    provider: Provider | None = None
    paused: bool | None = None
    is_stale: bool | None = None


class ListSyncJobsRequest(_Request):
    """The filter of a sync's job list, and ``include_total``."""

    status: JobStatusFilter | None = None
    include_total: bool | None = Field(default=None, description=_INCLUDE_TOTAL)


class _HoldRequest(_Request):
    hold: HoldLabel | None = Field(
        default=None,
        description="A named hold (`maintenance:INC-42`); without it the caller's plain hold "
        "`user:<caller>`. Labels starting `system:` or `bulk:` are the service's own.",
    )

    def command_data(self) -> dict[str, Any]:
        """The command's data: the fields given (none: the seed's plain pause or resume)."""
        return self.model_dump(mode="json", exclude_none=True)


class PauseRequest(_HoldRequest):
    """``POST .../pause``, optional (the vendor's SDK sends none): place a pause hold
    (CONTRACT.md v1.1); the answer's ``pause_holds`` lists the holds."""

    until: Until | None = Field(
        default=None,
        description="The hold ends by itself then: an RFC 3339 time or an ISO 8601 duration "
        "(`PT2H`, `P1D`), in the future, at most 90 days away.",
    )
    reason: Reason | None = None
    paused_by_user_id: UserId | None = None


class ResumeRequest(_HoldRequest):
    """``POST .../resume``, optional (the seed's resume sends none): without ``hold``, the
    plain holds and ``system:failures`` are released (named holds stay, and so does SUSPENDED
    while one is left); with it, that hold (another owner's needs ``syncs:admin``)."""

    force: bool | None = Field(default=None, description="Release every hold (`syncs:admin`).")
    mode: Literal["incremental", "full"] | None = Field(
        default=None, description="`full`: the next run lists every file (`modified_since` null)."
    )
    run: Literal["due", "next_interval"] | None = Field(
        default=None,
        description="`due` (default): a run at once if one fell due while paused; "
        "`next_interval`: one polling interval after the resume.",
    )
    resumed_by_user_id: UserId | None = None


#: Every request body model, for the OpenAPI document and the tests.
REQUEST_MODELS: Final[tuple[type[BaseModel], ...]] = (
    SyncCreateRequest,
    SyncUpdateRequest,
    ListSyncConfigurationsRequest,
    NamespaceListRequest,
    ListSyncJobsRequest,
    PauseRequest,
    ResumeRequest,
)


def accepted_fields(model: type[BaseModel]) -> list[str]:
    """The keys a request body model accepts, sorted (named when an unknown key is refused)."""
    return sorted(model.model_fields)


def request_error_details(model: type[BaseModel], exc: ValidationError) -> dict[str, Any]:
    """``accepted_fields`` of ``model`` when ``exc`` refused a key it does not declare: add it
    to the 422's details beside the errors (``{}`` when no key was unknown)."""
    if any(e["type"] == "extra_forbidden" for e in exc.errors(include_url=False)):
        return {"accepted_fields": accepted_fields(model)}
    return {}


# --------------------------------------------------------------------------- list and job bodies


class PaginationResponse(_Response):
    """Where a page is: ``total`` and ``total_pages`` only when ``include_total`` was asked."""

    total: int | None = None
    page: int | None = None
    page_size: int | None = None
    total_pages: int | None = None
    next_page: str | None = None
    previous_page: str | None = None
    next_cursor: str | None = None


class SyncListResponse(_Response):
    """A page of syncs, newest first; ``total`` is the count when asked for, else the number
    of results."""

    results: list[SyncConfigurationModel]
    pagination: PaginationResponse
    total: int


class SyncJobModel(_Response):
    """One run of a sync (a "sync job")."""

    sync_job_id: str
    sync_config_id: str
    internal_id: str
    namespace_id: str
    status: JobStatus
    phase: JobPhase | None = None
    trigger: JobTrigger | None = None
    full_sync: bool = False
    files_synced: int = 0
    files_failed: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    error: str | None = None
    current_cursor: str | None = None
    metadata: dict[str, Any] | None = None


class SyncJobListResponse(_Response):
    results: list[SyncJobModel]
    pagination: PaginationResponse
    total: int


class SyncMetricsResponse(_Response):
    """Health and staleness of a sync, computed from what is stored."""

    sync_config_id: str
    status: SyncStatus
    is_active: bool
    paused: bool = False
    total_files_discovered: int = 0
    total_files_synced: int = 0
    total_files_failed: int = 0
    batches_created: int = 0
    sync_run_counter: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_sync_at: datetime | None = None
    next_sync_at: datetime | None = None
    seconds_since_last_sync: int | None = None
    is_stale: bool = False
    intervals_since_last_sync: float | None = None
    stale_after_seconds: int | None = None
    failure_rate: float = 0.0
    healthy: bool = True
    dlq_total: int = 0
    running_job: bool = False
    last_job: SyncJobModel | None = None


class TriggerResponse(_Response):
    """A run asked for: its job (null when the command requested none, e.g. a full run
    deferred until the running one releases the lock)."""

    sync_config_id: str
    sync_job_id: str | None
    full_sync: bool


class DeleteResponse(_Response):
    sync_config_id: str
    deleted: Literal[True] = True


class SyncHistoryEntry(_Response):
    """One versioned change of a sync (a row of its timeline)."""

    version: int
    event_type: str
    from_status: SyncStatus | None = None
    to_status: SyncStatus | None = None
    trigger: str
    command_id: str | None = None
    actor: str
    reason: str | None = None
    occurred_at: datetime


class SyncHistoryResponse(_Response):
    """A sync's timeline, oldest change first."""

    sync_config_id: str
    results: list[SyncHistoryEntry]
    total: int


# --------------------------------------------------------------------------- errors, operations


class ErrorDetail(_Response):
    message: str
    type: str = Field(description="Stable, machine-readable error type.")
    code: str | None = Field(default=None, description="Finer code, when there is one.")
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(_Response):
    """Every non-2xx answer."""

    success: Literal[False] = False
    status: int
    error: ErrorDetail


class CommandErrorModel(_Response):
    code: ErrorCode
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class CommandResultModel(_Response):
    """A command's result as HTTP shows it: the sync in its response view, no run data."""

    command_id: str
    command_type: str
    sync_config_id: str | None
    outcome: Outcome
    version: int | None = None
    status: SyncStatus | None = None
    sync: SyncConfigurationModel | None = None
    error: CommandErrorModel | None = None
    events: list[str] = Field(default_factory=list)
    sync_job_id: str | None = None  # (v1.1) the job of the run the command requested
    holds: list[str] | None = None  # (v1.1) of a pause or resume: the hold labels left
    operation_id: str | None = None  # (v1.1) of a bulk command: its operation
    counts: BulkCounts | None = None  # (v1.1) of a bulk command: {matched, applied, ...}

    @classmethod
    def from_result(cls, result: CommandResult) -> Self:
        data = result.model_dump(exclude={"sync", "run"})
        sync = None if result.sync is None else SyncConfigurationModel.from_sync(result.sync)
        return cls.model_validate({**data, "sync": sync})


class OperationResponse(_Response):
    """``GET /v1/operations/{operation_id}``: a write that was still in flight when answered."""

    operation_id: str
    status: Literal["pending", "done"]
    result: CommandResultModel | None = None


#: Every response body model, for the OpenAPI document and the tests.
RESPONSE_MODELS: Final[tuple[type[BaseModel], ...]] = (
    SyncConfigurationModel,
    SyncListResponse,
    SyncJobModel,
    SyncJobListResponse,
    SyncMetricsResponse,
    TriggerResponse,
    DeleteResponse,
    SyncHistoryResponse,
    OperationResponse,
    ErrorBody,
)
