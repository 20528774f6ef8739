"""The sync configuration: every field, default and limit of the public model.

``SyncSettings`` holds what a user configures; ``SyncConfiguration`` adds identity, status,
pause fields, metrics and run tracking. Both are frozen: a change is a new object.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from statemachine.filters import FileFilters, SchemaMapping
from statemachine.status import RunStatus, SyncStatus

__all__ = [
    "IMMUTABLE_FIELDS",
    "MAX_DESCRIPTION",
    "MAX_HOLDS",
    "MAX_LAST_ERROR",
    "MAX_SYNC_JSON_BYTES",
    "MAX_TRACKED_IDS",
    "MUTABLE_FIELDS",
    "SET_ONCE_FIELDS",
    "PauseHold",
    "Provider",
    "RunMetrics",
    "SyncConfiguration",
    "SyncMode",
    "SyncSettings",
    "check_source_path",
    "source_path_rules",
]

MAX_LAST_ERROR: Final = 1000
MAX_DESCRIPTION: Final = 500
MAX_METADATA_KEYS: Final = 50
#: A sync travels whole in every event and result: its JSON is kept well under Kafka's limits.
MAX_SYNC_JSON_BYTES: Final = 256 * 1024
#: Pause holds a sync may carry at once (a pause placing one more is refused).
MAX_HOLDS: Final = 100
#: Batch and task ids kept on the sync (the most recent); ``batches_created`` counts them all.
MAX_TRACKED_IDS: Final = 1000

Id = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]
NonNegative = Annotated[int, Field(ge=0)]


class Provider(StrEnum):
    """External storage providers a sync can read from."""

    GOOGLE_DRIVE = "google_drive"
    S3 = "s3"
    SNOWFLAKE = "snowflake"
    SHAREPOINT = "sharepoint"
    TIGRIS = "tigris"


class SyncMode(StrEnum):
    """``initial_only`` runs once then completes; ``continuous`` polls on its interval."""

    INITIAL_ONLY = "initial_only"
    CONTINUOUS = "continuous"


_SOURCE_PATH_RULES: Final[dict[Provider, tuple[re.Pattern[str], str]]] = {
    Provider.S3: (
        re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s]*)?$"),
        "'bucket/prefix' with an S3 bucket name",
    ),
    Provider.TIGRIS: (
        re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s]*)?$"),
        "'bucket/prefix' with a bucket name",
    ),
    Provider.GOOGLE_DRIVE: (re.compile(r"^[A-Za-z0-9_\-]{1,256}$"), "a Google Drive folder id"),
    Provider.SHAREPOINT: (re.compile(r"^/sites/[^/\s][^/]*(/.*)?$"), "'/sites/Name/Documents...'"),
    Provider.SNOWFLAKE: (
        re.compile(r'^([A-Za-z_][\w$]*|"[^"]+")(\.([A-Za-z_][\w$]*|"[^"]+")){2}$'),
        "'DB.SCHEMA.TABLE'",
    ),
}


def source_path_rules() -> dict[Provider, tuple[str, str]]:
    """``provider -> (regex, shape in words)``: the formats ``check_source_path`` enforces."""
    return {p: (rule.pattern, shape) for p, (rule, shape) in _SOURCE_PATH_RULES.items()}


def check_source_path(provider: Provider, source_path: str) -> str:
    """Return ``source_path`` if it has the provider's format, else raise ``ValueError``."""
    pattern, shape = _SOURCE_PATH_RULES[provider]
    if not pattern.fullmatch(source_path):
        raise ValueError(f"source_path for provider {provider.value} must be {shape}")
    return source_path


class RunMetrics(BaseModel):
    """File and byte counts of one run (the cumulative totals are on the sync)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    files_discovered: NonNegative = 0
    files_synced: NonNegative = 0
    files_failed: NonNegative = 0
    bytes_synced: NonNegative = 0


class PauseHold(BaseModel):
    """One reason a sync is paused (wire contract v1.1): the sync is SUSPENDED while it has
    any. ``hold`` is its label: ``user:<caller>`` for a plain pause, a name for a named one
    (``maintenance:INC-42``), ``system:failures`` for an auto-suspension, ``bulk:<operation
    id>`` for a bulk pause. ``until``: when the service releases it itself (UTC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hold: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    reason: str | None = Field(default=None, max_length=MAX_LAST_ERROR)
    paused_at: datetime
    paused_by_user_id: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    until: datetime | None = None


class SyncSettings(BaseModel):
    """The configuration a user sets; every field has the seed's default and limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connection_id: Id
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    file_filters: FileFilters | None = None
    schema_mapping: SchemaMapping | None = None
    sync_mode: SyncMode = SyncMode.CONTINUOUS
    polling_interval_seconds: int = Field(default=300, ge=30, le=900)
    batch_size: int = Field(default=50, ge=1, le=100)
    create_object_on_confirm: bool = True
    skip_duplicates: bool = True
    skip_batch_submission: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=MAX_METADATA_KEYS)
    max_objects_per_run: int = Field(default=100_000, ge=1)
    max_batch_chunk_size: int = Field(default=1000, ge=1, le=1000)
    batch_chunk_size: int = Field(default=100, ge=1, le=1000, validate_default=True)
    resume_enabled: bool = True
    resume_checkpoint_frequency: int = Field(default=1000, ge=100, le=10_000)

    @field_validator("batch_chunk_size")
    @classmethod
    def _chunk_sizes(cls, value: int, info: ValidationInfo) -> int:
        # Checked on the field (max_batch_chunk_size is declared, so validated, before it), so
        # the error names batch_chunk_size and its limit instead of the whole model; the field
        # has validate_default so that the default 100 is checked against a lower maximum too.
        ceiling = info.data.get("max_batch_chunk_size")
        if ceiling is not None and value > ceiling:
            raise PydanticCustomError(
                "less_than_equal",
                "batch_chunk_size must be <= max_batch_chunk_size ({le})",
                {"le": ceiling},
            )
        return value


#: Configuration fields a ``sync.update`` may change (from the next run on).
MUTABLE_FIELDS: Final[frozenset[str]] = frozenset(SyncSettings.model_fields)


class SyncConfiguration(SyncSettings):
    """A sync configuration as stored and as carried by every event and result."""

    sync_config_id: Annotated[str, StringConstraints(pattern=r"^sync_[A-Za-z0-9_\-]{1,120}$")]
    bucket_id: Id
    internal_id: Id
    namespace_id: Id
    #: Optional since v1.1: a sync may be created without it and given one by an update
    #: while it is still null; once set it never changes.
    provider: Provider | None = None
    source_path: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    created_by_user_id: Id

    status: SyncStatus = SyncStatus.PENDING
    is_active: bool = False
    paused: bool = False
    pause_reason: str | None = Field(default=None, max_length=MAX_LAST_ERROR)
    paused_at: datetime | None = None
    paused_by_user_id: str | None = None
    #: The holds keeping the sync paused (v1.1), oldest first; the four fields above describe
    #: the earliest. Not empty exactly while the sync is SUSPENDED.
    pause_holds: list[PauseHold] = Field(default_factory=list, max_length=MAX_HOLDS)

    total_files_discovered: NonNegative = 0
    total_files_synced: NonNegative = 0
    total_files_failed: NonNegative = 0
    total_bytes_synced: NonNegative = 0
    consecutive_failures: NonNegative = 0
    last_error: str | None = Field(default=None, max_length=MAX_LAST_ERROR)

    created_at: datetime
    updated_at: datetime
    last_sync_at: datetime | None = None
    next_sync_at: datetime | None = None

    locked_by_worker_id: str | None = None
    #: A run holds the lock (``locked_by_worker_id`` is set). Derived, never set: a stored or
    #: received value is replaced by the derived one when the model is built.
    locked: bool = False
    locked_at: datetime | None = None
    lock_expires_at: datetime | None = None
    #: The run's id: its job's ``sync_job_id`` (``job_`` + ULID); a v1 run's UUID as text.
    current_sync_run_id: str | None = Field(default=None, min_length=1, max_length=256)
    sync_run_counter: NonNegative = 0
    batch_ids: list[str] = Field(default_factory=list)
    task_ids: list[str] = Field(default_factory=list)
    batches_created: NonNegative = 0
    resume_cursor: str | None = None
    resume_last_primary_key: str | None = None
    resume_objects_processed: NonNegative = 0

    # synclife's own run tracking (extensions of the seed's model).
    lock_token: int | None = Field(default=None, ge=1)
    current_run: RunMetrics = Field(default_factory=RunMetrics)
    last_run_status: RunStatus | None = None
    run_requested_at: datetime | None = None
    #: A full run was asked for while a run held the lock (or by a resume that requested no
    #: run at once): it is requested when the lock is released (else when due), and the flag
    #: stays set until that full run completes (a full run that fails, expires or is unlocked
    #: leaves it set: the next run is full again).
    pending_full_sync: bool = False
    #: The run holding the lock is a full run asked for (``pending_full_sync`` or a queued
    #: full job when it started); cleared when the lock is released.
    current_full_sync: bool = False
    #: The requested run no worker has started yet (at most one per sync), and whether it is
    #: a full run.
    queued_sync_job_id: str | None = None
    queued_full_sync: bool = False

    version: int = Field(default=1, ge=1)

    @field_validator("source_path")
    @classmethod
    def _source_path_format(cls, value: str, info: ValidationInfo) -> str:
        # provider is declared, so validated, before source_path; skip if it was invalid or
        # is not set yet (then source_path is only checked as non-empty text).
        provider = info.data.get("provider")
        return value if provider is None else check_source_path(provider, value)

    @field_validator("locked", mode="before")
    @classmethod
    def _locked_is_derived(cls, value: Any) -> bool:
        # Whatever a stored or received document says (even a value that is no boolean): the
        # after-validator derives it from the lock holder.
        return False

    @model_validator(mode="after")
    def _consistent(self) -> SyncConfiguration:
        # ``locked`` is in every dump; whatever value a stored or received document carries,
        # it is derived again from the lock holder (so an old document without it loads too).
        # Done here rather than before validation: a "before" validator would make every
        # JSON document go through a Python dict first (about twice the cost of a load).
        locked = self.locked_by_worker_id is not None
        if self.locked is not locked:
            object.__setattr__(self, "locked", locked)
        if self.status is SyncStatus.SUSPENDED and "pause_holds" not in self.model_fields_set:
            # A document from before holds: its pause is the one hold it has. Marked as set, so
            # that validating this instance again (as a field of an event or a result, or a
            # copy of it) never derives it a second time.
            try:
                hold = PauseHold.model_validate(_legacy_hold(self))
            except ValidationError as exc:
                fields = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
                raise ValueError(
                    f"pause_holds: the pause fields of a document without holds do not make "
                    f"a valid hold ({fields})"
                ) from None
            object.__setattr__(self, "pause_holds", [hold])
            self.__pydantic_fields_set__.add("pause_holds")
        problem = self.consistency_problem()
        if problem is not None:
            raise ValueError(problem)
        return self

    def consistency_problem(self) -> str | None:
        """What breaks the rules between fields, if anything does (the model refuses it)."""
        # is_active and paused are derived from status: never set independently.
        if self.is_active != (self.status is SyncStatus.ACTIVE):
            return "is_active must be true exactly when status is ACTIVE"
        if self.paused != (self.status is SyncStatus.SUSPENDED):
            return "paused must be true exactly when status is SUSPENDED"
        if bool(self.pause_holds) != self.paused:
            return "pause_holds must be non-empty exactly when status is SUSPENDED"
        return None


def _legacy_hold(sync: SyncConfiguration) -> dict[str, Any]:
    """The hold of a SUSPENDED document written before holds existed: the service's
    auto-suspension (``system:failures``) or its pauser's plain hold."""
    by = sync.paused_by_user_id or "unknown"
    return {
        "hold": "system:failures" if by == "system" else f"user:{by}",
        "reason": sync.pause_reason,
        "paused_at": sync.paused_at or sync.updated_at or sync.created_at,
        "paused_by_user_id": by,
    }


#: Fields fixed at creation.
IMMUTABLE_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "sync_config_id",
        "bucket_id",
        "internal_id",
        "namespace_id",
        "provider",
        "source_path",
        "created_by_user_id",
        "created_at",
    }
)

#: Immutable fields an update may still set while they are null (then they are fixed).
SET_ONCE_FIELDS: Final[frozenset[str]] = frozenset({"provider"})
