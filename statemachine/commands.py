"""Commands as the machine sees them: a type, who sent it, and its validated data.

Decoding the wire and authenticating the sender happen in ``events``; by the time a
``Command`` exists its tenancy comes from the caller's key and namespace, never from the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pydantic.json_schema import SkipJsonSchema

from statemachine.durations import Until
from statemachine.errors import CommandError, ErrorCode, reported, validation_details
from statemachine.filters import FileFilters, SchemaMapping
from statemachine.model import (
    IMMUTABLE_FIELDS,
    MAX_LAST_ERROR,
    SET_ONCE_FIELDS,
    Provider,
    SyncMode,
)
from statemachine.status import SyncStatus

__all__ = [
    "SUPPORTED_TYPES",
    "ArchiveData",
    "BulkPauseData",
    "BulkResumeData",
    "BulkSelector",
    "BulkUndoData",
    "CancelData",
    "Command",
    "CommandType",
    "CreateData",
    "PauseData",
    "ResumeData",
    "RunCheckpointData",
    "RunCompleteData",
    "RunFailData",
    "RunHeartbeatData",
    "RunStartData",
    "SystemData",
    "SystemTrigger",
    "TriggerData",
    "UnlockData",
    "UpdateData",
    "data_model",
    "parse_data",
]

UserId = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]
Reason = Annotated[str, StringConstraints(max_length=MAX_LAST_ERROR)]


class CommandType(StrEnum):
    """``ce_type`` values on the commands topic."""

    CREATE = "sync.create"
    UPDATE = "sync.update"
    ACTIVATE = "sync.activate"
    PAUSE = "sync.pause"
    RESUME = "sync.resume"
    TRIGGER = "sync.trigger"
    CANCEL = "sync.cancel"
    ARCHIVE = "sync.archive"
    UNLOCK = "sync.unlock"
    RUN_START = "sync.run.start"
    RUN_HEARTBEAT = "sync.run.heartbeat"
    RUN_CHECKPOINT = "sync.run.checkpoint"
    RUN_COMPLETE = "sync.run.complete"
    RUN_FAIL = "sync.run.fail"
    BULK_PAUSE = "sync.bulk.pause"
    BULK_RESUME = "sync.bulk.resume"
    BULK_UNDO = "sync.bulk.undo"

    @property
    def is_run(self) -> bool:
        """Worker commands (``sync.run.*``) need the ``syncs:run`` scope."""
        return self._value_.startswith("sync.run.")

    @property
    def is_bulk(self) -> bool:
        """Bulk operations (``sync.bulk.*``): keyed by the operation id, never ``decide``d."""
        return self._value_.startswith("sync.bulk.")


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _SettingsFields(_Data):
    """The optional configuration fields, shared by create and update (all default None)."""

    description: str | None = None
    file_filters: FileFilters | None = None
    schema_mapping: SchemaMapping | None = None
    sync_mode: SyncMode | None = None
    polling_interval_seconds: int | None = None
    batch_size: int | None = None
    create_object_on_confirm: bool | None = None
    skip_duplicates: bool | None = None
    skip_batch_submission: bool | None = None
    metadata: dict[str, Any] | None = None
    max_objects_per_run: int | None = None
    max_batch_chunk_size: int | None = None
    batch_chunk_size: int | None = None
    resume_enabled: bool | None = None
    resume_checkpoint_frequency: int | None = None


class CreateData(_SettingsFields):
    """``sync.create``: the required identity of the sync plus any optional setting.

    Limits of the settings are checked when the whole configuration is built, so that
    errors name the field exactly as the stored model does.
    """

    bucket_id: UserId
    connection_id: UserId
    #: Optional (v1.1): without it ``source_path`` is only checked as non-empty text.
    provider: Provider | None = None
    source_path: str
    #: Optional (v1.1): the command's caller (the key's user, else ``key:<key id>``).
    created_by_user_id: UserId | None = None
    initial_status: Literal[SyncStatus.PENDING, SyncStatus.DRAFT, SyncStatus.SUSPENDED] = (
        SyncStatus.PENDING
    )
    reason: Reason | None = None


class UpdateData(_SettingsFields):
    """``sync.update``: a partial set of the mutable configuration fields.

    ``provider`` may be set while the sync has none. ``is_active`` (false: pause, true:
    resume) or ``status`` (``SUSPENDED`` or ``ACTIVE``, the same) make the update also a plain
    pause or resume, applied after the configuration change as a version of its own.
    """

    connection_id: UserId | None = None
    provider: Provider | None = None
    is_active: bool | None = None
    status: Literal[SyncStatus.SUSPENDED, SyncStatus.ACTIVE] | None = None
    updated_by_user_id: UserId | None = None


HoldLabel = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class PauseData(_Data):
    """``sync.pause``: place a hold: ``hold`` (a named one) or the caller's plain hold
    (``user:<caller>``); ``until``: it ends by itself then (see ``statemachine.holds``)."""

    #: Optional (v1.1): the command's caller when not given.
    paused_by_user_id: UserId | None = None
    reason: Reason | None = None
    hold: HoldLabel | None = None
    until: Until | None = None


class ResumeData(_Data):
    """``sync.resume``: release the plain holds and ``system:failures``, or ``hold``, or all
    (``force``); ``mode`` of the next run, ``run``: ``due`` or ``next_interval``."""

    resumed_by_user_id: UserId | None = None
    hold: HoldLabel | None = None
    force: bool = False
    mode: Literal["incremental", "full"] = "incremental"
    run: Literal["due", "next_interval"] = "due"


class ActivateData(_Data):
    activated_by_user_id: UserId | None = None


class CancelData(_Data):
    canceled_by_user_id: UserId | None = None
    reason: Reason | None = None


class ArchiveData(_Data):
    archived_by_user_id: UserId | None = None
    reason: Reason | None = None


class TriggerData(_Data):
    """``sync.trigger``: request a run now."""

    requested_by_user_id: UserId | None = None
    #: ``incremental`` (files modified since the last sync) or ``full`` (every file; while a
    #: run holds the lock it is requested when the lock is released).
    mode: Literal["incremental", "full"] = "incremental"


class UnlockData(_Data):
    """``sync.unlock``: release a stuck run lock (its worker's token is then ``lock_lost``)."""

    unlocked_by_user_id: UserId | None = None
    reason: Reason | None = None


LeaseSeconds = Annotated[int, Field(ge=5, le=86_400)]
Delta = Annotated[int, Field(ge=0)]
LockToken = Annotated[int, Field(ge=1)]
BatchIds = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=256)]], Field(max_length=10_000)
]


def _canonical_run_id(value: str) -> str:
    """A v1 run id (a UUID in any of its spellings) in its canonical form; others as given."""
    try:
        return str(UUID(value))
    except ValueError:
        return value


#: A run's id: its job's ``sync_job_id`` (``job_`` + ULID), or a v1 run's UUID.
RunId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, strip_whitespace=True),
    AfterValidator(_canonical_run_id),
]


class RunStartData(_Data):
    """``sync.run.start``: take the run lock for ``lease_seconds``, for the queued job
    (``sync_job_id``, if given, must name it; without a queued job a new one is made)."""

    worker_id: UserId
    lease_seconds: LeaseSeconds = 300
    sync_job_id: UserId | None = None


class _RunData(_Data):
    """Every report of a running worker names its run and proves it holds the lock."""

    run_id: RunId
    lock_token: LockToken


class RunHeartbeatData(_RunData):
    """``sync.run.heartbeat``: extend the lease (by ``lease_seconds`` from now)."""

    lease_seconds: LeaseSeconds = 300


class RunCheckpointData(_RunData):
    """``sync.run.checkpoint``: where the run is, and the metric deltas since the last report."""

    resume_cursor: Annotated[str, StringConstraints(max_length=8192)] | None = None
    resume_last_primary_key: Annotated[str, StringConstraints(max_length=8192)] | None = None
    resume_objects_processed: Delta | None = None
    files_discovered: Delta = 0
    files_synced: Delta = 0
    files_failed: Delta = 0
    bytes_synced: Delta = 0


class RunCompleteData(_RunData):
    """``sync.run.complete``: the run's totals, and the batches and tasks it created."""

    files_discovered: Delta = 0
    files_synced: Delta = 0
    files_failed: Delta = 0
    bytes_synced: Delta = 0
    objects_processed: Delta | None = None
    batch_ids: BatchIds = Field(default_factory=list)
    task_ids: BatchIds = Field(default_factory=list)


class RunFailData(_RunData):
    """``sync.run.fail``: the run stopped on ``error`` (kept up to 1000 characters)."""

    error: Annotated[str, StringConstraints(min_length=1, max_length=100_000)]


MetadataValue = str | int | float | bool


class BulkSelector(_Data):
    """Which syncs of the caller's namespace a bulk operation changes: every field given must
    match (``metadata``: each pair). Archived syncs are never matched. Empty: rejected."""

    bucket_id: UserId | None = None
    connection_id: UserId | None = None
    provider: Provider | None = None
    status: SyncStatus | None = None
    metadata: Annotated[dict[str, MetadataValue], Field(max_length=20)] | None = None

    def is_empty(self) -> bool:
        return not any(v not in (None, {}) for v in self.model_dump().values())


class BulkPauseData(PauseData):
    """``sync.bulk.pause``: the selector and the fields of the pause each sync gets (its hold
    is the operation's, ``bulk:<operation id>``, never one given)."""

    #: Not part of a bulk pause (``parse_data`` refuses it, naming ``hold``): out of its
    #: schema and its dumps.
    hold: SkipJsonSchema[HoldLabel | None] = Field(default=None, exclude=True)
    selector: BulkSelector


class BulkResumeData(ResumeData):
    """``sync.bulk.resume``: the selector and the fields of the resume each sync gets."""

    selector: BulkSelector


class BulkUndoData(_Data):
    """``sync.bulk.undo`` (keyed by the operation it undoes): release that operation's holds."""

    undone_by_user_id: UserId | None = None
    reason: Reason | None = None


class SystemTrigger(StrEnum):
    """Changes the service makes itself (never accepted from the commands topic)."""

    REQUEST_RUN = "system.request_run"
    LOCK_EXPIRED = "system.lock_expired"
    #: A hold's ``until`` passed: the service releases it (trigger ``pause_expired``).
    PAUSE_EXPIRED = "system.pause_expired"


class SystemData(_Data):
    """Data of a system change (none)."""


CommandData = (
    CreateData
    | UpdateData
    | ActivateData
    | PauseData
    | ResumeData
    | CancelData
    | ArchiveData
    | TriggerData
    | UnlockData
    | RunStartData
    | RunHeartbeatData
    | RunCheckpointData
    | RunCompleteData
    | RunFailData
    | SystemData
    | BulkUndoData
)

_DATA_MODELS: Final[dict[CommandType, type[CommandData]]] = {
    CommandType.CREATE: CreateData,
    CommandType.UPDATE: UpdateData,
    CommandType.ACTIVATE: ActivateData,
    CommandType.PAUSE: PauseData,
    CommandType.RESUME: ResumeData,
    CommandType.CANCEL: CancelData,
    CommandType.ARCHIVE: ArchiveData,
    CommandType.TRIGGER: TriggerData,
    CommandType.UNLOCK: UnlockData,
    CommandType.RUN_START: RunStartData,
    CommandType.RUN_HEARTBEAT: RunHeartbeatData,
    CommandType.RUN_CHECKPOINT: RunCheckpointData,
    CommandType.RUN_COMPLETE: RunCompleteData,
    CommandType.RUN_FAIL: RunFailData,
    CommandType.BULK_PAUSE: BulkPauseData,
    CommandType.BULK_RESUME: BulkResumeData,
    CommandType.BULK_UNDO: BulkUndoData,
}

#: Command types this version of the machine applies; the others are ``unsupported_type``.
SUPPORTED_TYPES: Final[frozenset[CommandType]] = frozenset(_DATA_MODELS)

_TENANCY_FIELDS: Final = frozenset({"internal_id", "namespace_id"})


def data_model(command_type: CommandType) -> type[CommandData] | None:
    """The pydantic model of a command type's data (None: the type carries none we accept)."""
    return _DATA_MODELS.get(command_type)


#: Fields fixed at creation (an update may not change them).
_FIXED: Final = IMMUTABLE_FIELDS - SET_ONCE_FIELDS
#: Fields the data never sets: the tenancy (from the key) and the id (from the key and subject).
_FROM_ELSEWHERE: Final = _TENANCY_FIELDS | {"sync_config_id"}


def parse_data(
    command_type: CommandType, sync_config_id: str, data: Any
) -> CommandData | CommandError:
    """Validate a command's data for its type, or say precisely what is wrong with it."""
    model = _DATA_MODELS.get(command_type)
    if model is None:
        return CommandError(
            code=ErrorCode.UNSUPPORTED_TYPE,
            message=f"command type {command_type.value} is not supported",
            details={"supported_types": sorted(t.value for t in SUPPORTED_TYPES)},
        )
    if not isinstance(data, dict):
        return CommandError(
            code=ErrorCode.VALIDATION_ERROR,
            message="command data must be a JSON object",
            details={"errors": [{"field": "(root)", "problem": "not a JSON object"}]},
        )
    problems: list[dict[str, Any]] = []
    for name in sorted(_TENANCY_FIELDS & data.keys()):
        problems.append(
            {"field": name, "problem": "set from the API key and x-namespace, never from data"}
        )
    if "sync_config_id" in data and data["sync_config_id"] != sync_config_id:
        problems.append(
            {"field": "sync_config_id", "problem": "differs from the message key and ce_subject"}
        )
    if command_type is CommandType.UPDATE:
        for name in sorted((_FIXED - _TENANCY_FIELDS) & data.keys()):
            if name != "sync_config_id":
                problems.append({"field": name, "problem": "cannot be changed after create"})
    left_out = _FIXED if command_type is CommandType.UPDATE else _FROM_ELSEWHERE
    # Most data names none of them: then it is validated as it is, without a copy.
    clean = {k: v for k, v in data.items() if k not in left_out} if left_out & data.keys() else data
    truncated = 0  # problems pydantic found past those validation_details lists
    try:
        parsed = model.model_validate(clean)
    except ValidationError as exc:
        found = validation_details(exc)
        problems.extend(found["errors"])
        truncated = found.get("truncated", 0)
        parsed = None
    if isinstance(parsed, UpdateData) and not parsed.model_fields_set - {"updated_by_user_id"}:
        problems.append({"field": "(root)", "problem": "an update must change at least one field"})
    if (
        isinstance(parsed, UpdateData)
        and parsed.is_active is not None
        and parsed.status is not None
        and parsed.is_active != (parsed.status is SyncStatus.ACTIVE)
    ):
        problems.append(
            {"field": "status", "problem": f"contradicts is_active={str(parsed.is_active).lower()}"}
        )
    if isinstance(parsed, BulkPauseData | BulkResumeData) and parsed.selector.is_empty():
        problems.append({"field": "selector", "problem": "an empty selector matches nothing"})
    if isinstance(parsed, BulkPauseData) and getattr(parsed, "hold", None) is not None:
        problems.append({"field": "hold", "problem": "a bulk pause's hold is bulk:<operation id>"})
    if problems or parsed is None:
        return CommandError(
            code=ErrorCode.VALIDATION_ERROR,
            message=f"invalid {command_type.value} data: "
            + "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5]),
            details=_with_truncated(reported(problems), truncated),
        )
    return parsed


def _with_truncated(details: dict[str, Any], more: int) -> dict[str, Any]:
    if more:
        details["truncated"] = details.get("truncated", 0) + more
    return details


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One authenticated command (or a system change, with no command id), ready for ``decide``.

    A plain dataclass: its parts are validated where they come from (the envelope, the data's
    model, the key), and one is built per command (a pydantic model took 3.5 us)."""

    command_id: str | None
    type: CommandType | SystemTrigger
    sync_config_id: str
    internal_id: str
    namespace_id: str
    data: CommandData
    #: At least 0 (the envelope refuses a negative ``ce_expectedversion``).
    expected_version: int | None = None
    key_id: str | None = None
    issued_at: datetime | None = None
    #: Who sent it, for the user fields its data leaves out: the key's owner user id, else
    #: ``key:<key id>`` (None: a change the service makes itself).
    caller: str | None = None
    #: The key grants ``syncs:admin``: ``force`` and releasing another owner's named hold.
    admin: bool = False
    #: A command the service builds itself (a bulk operation's change of one sync): its pause
    #: may place, and its resume release, the service's own labels (``system:``, ``bulk:``)
    #: whoever placed them; ``force`` and other named holds still need ``admin``. Never set
    #: for a command read from the commands topic.
    system_labels_allowed: bool = False
    #: Who the changes are recorded as (e.g. ``bulk:<operation id>``); None: from the data's
    #: user, the caller or the key (``changes.actor``).
    actor: str | None = None
