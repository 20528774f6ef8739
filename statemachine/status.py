"""The 13 statuses of the seed, and the role synclife gives each."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["SYNC_STATUSES", "TERMINAL_STATUSES", "RunStatus", "SyncStatus"]


class SyncStatus(StrEnum):
    """Every value of the seed's shared task-status enum.

    Only some are statuses a *sync* takes (see ``SYNC_STATUSES``); the run statuses are in
    ``RunStatus``; the rest are kept for wire compatibility and never taken.
    """

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"
    SKIPPED = "SKIPPED"
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    ARCHIVED = "ARCHIVED"
    SUSPENDED = "SUSPENDED"


class RunStatus(StrEnum):
    """The status of one run of a sync (the subset of the shared enum a run takes)."""

    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    FAILED = "FAILED"


#: The statuses a sync configuration can be in.
SYNC_STATUSES: frozenset[SyncStatus] = frozenset(
    {
        SyncStatus.DRAFT,
        SyncStatus.PENDING,
        SyncStatus.ACTIVE,
        SyncStatus.SUSPENDED,
        SyncStatus.COMPLETED,
        SyncStatus.FAILED,
        SyncStatus.CANCELED,
        SyncStatus.ARCHIVED,
    }
)

#: Statuses no command leaves, except to ARCHIVED (and ARCHIVED is left by nothing).
TERMINAL_STATUSES: frozenset[SyncStatus] = frozenset(
    {SyncStatus.COMPLETED, SyncStatus.CANCELED, SyncStatus.ARCHIVED}
)
