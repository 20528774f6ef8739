"""The wire contract's outgoing messages: lifecycle events and command results (data only).

Headers follow CloudEvents 1.0's Kafka binding, binary mode (see ``events.envelope``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from statemachine.decision import Outcome
from statemachine.errors import CommandError
from statemachine.model import SyncConfiguration
from statemachine.status import SyncStatus

__all__ = [
    "BULK_EVENT_TYPES",
    "RESULT_TYPE",
    "BulkCounts",
    "BulkEvent",
    "Checkpoint",
    "CommandResult",
    "LifecycleEvent",
    "is_bulk_event",
]

RESULT_TYPE = "sync.command_result"

#: ``ce_type`` of a bulk operation's own events on ``sync.lifecycle`` and their versions.
BULK_EVENT_TYPES: dict[str, int] = {
    "sync.bulk_started": 1,
    "sync.bulk_completed": 2,
    "sync.bulk_undone": 3,
}


def is_bulk_event(event_type: str) -> bool:
    """Is a ``ce_type`` of ``sync.lifecycle`` a bulk operation's event (``BulkEvent`` data,
    keyed by the operation id), not a sync's (``LifecycleEvent``)?"""
    return event_type in BULK_EVENT_TYPES


class Checkpoint(BaseModel):
    """Where the next run resumes (``resume_enabled``), as carried by run events."""

    model_config = ConfigDict(frozen=True)

    resume_cursor: str | None = None
    resume_last_primary_key: str | None = None
    resume_objects_processed: int = 0


class LifecycleEvent(BaseModel):
    """Data of every event on ``sync.lifecycle``: one per persisted change of a sync.

    The fields after ``sync`` appear only on the event types that carry them (they are left
    out of the JSON elsewhere): ``from_status``/``to_status`` on every change, ``modified_since``
    and ``checkpoint`` on ``sync.run_requested`` and ``sync.run_started`` (``modified_since``
    null: a full sync), ``run_id`` on run events, ``worker_id`` and ``lock_token`` on
    ``sync.run_started`` (``worker_id`` also on ``sync.lock_released``), ``error`` on
    ``sync.run_failed`` and ``sync.lock_expired``, ``run_totals`` on ``sync.run_completed``,
    ``sync_job_id`` and ``full_sync`` on ``sync.run_requested`` and ``sync.run_started`` (the
    run's job; the ``trigger`` of a ``sync.run_requested`` is the job's: ``scheduled``,
    ``manual`` or ``resume``); ``runs_skipped_while_paused`` on the change that resumes a
    paused sync (``sync.status_changed`` to ACTIVE by a resume or an expired hold).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sync_config_id: str
    bucket_id: str
    namespace_id: str
    internal_id: str
    version: int
    occurred_at: datetime
    command_id: str | None
    actor: str
    reason: str | None
    trigger: str
    sync: SyncConfiguration
    from_status: SyncStatus | None = None
    to_status: SyncStatus | None = None
    modified_since: datetime | None = None
    checkpoint: Checkpoint | None = None
    run_id: str | None = None
    worker_id: str | None = None
    lock_token: int | None = None
    error: str | None = None
    run_totals: dict[str, int] | None = None
    sync_job_id: str | None = None
    full_sync: bool | None = None
    #: On the change that resumes a paused sync (its last hold released): how many times it
    #: fell due while paused (0 if never; else 1 + whole intervals from its first due time).
    runs_skipped_while_paused: int | None = None


class BulkCounts(BaseModel):
    """What a bulk operation (or its undo) did: syncs matched, and each one's outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    matched: int = 0
    applied: int = 0
    noop: int = 0
    rejected: int = 0


class BulkEvent(BaseModel):
    """Data of a bulk operation's events on ``sync.lifecycle`` (``sync.bulk_started`` version 1,
    ``sync.bulk_completed`` version 2, ``sync.bulk_undone`` version 3), keyed by the operation
    id (``ce_subject`` too). Each matched sync's own change is a ``LifecycleEvent`` of its own
    (actor ``bulk:<operation id>``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operation_id: str
    kind: str
    namespace_id: str
    internal_id: str
    version: int
    occurred_at: datetime
    command_id: str
    selector: dict[str, Any]
    counts: BulkCounts


class CommandResult(BaseModel):
    """Data of ``sync.command_result``: exactly one per command id.

    A message that cannot be authenticated or decoded is answered under the id derived from
    where it was written (``kafka:<topic>:<partition>:<offset>``), not its ``ce_id``.
    """

    model_config = ConfigDict(frozen=True)

    command_id: str
    command_type: str
    sync_config_id: str | None
    outcome: Outcome
    version: int | None = None
    status: SyncStatus | None = None
    sync: SyncConfiguration | None = None
    error: CommandError | None = None
    events: list[str] = []
    run: dict[str, Any] | None = None
    #: The job of the run this command requested (``sync.trigger``, ``sync.resume``, an
    #: update that resumed, ...); null when it requested none.
    sync_job_id: str | None = None
    #: Of ``sync.pause`` and ``sync.resume`` (v1.1): the labels of the pause holds the sync
    #: has after the command (empty: it is not paused); null for other commands.
    holds: list[str] | None = None
    #: A bulk command's operation (its Kafka key; ``sync_config_id`` is the same key) and what
    #: it did (no per-sync list); null for other commands.
    operation_id: str | None = None
    counts: BulkCounts | None = None

    def summary(self) -> dict[str, Any]:
        """A one-line view for people (the CLI)."""
        out: dict[str, Any] = {"outcome": self.outcome.value, "command_type": self.command_type}
        if self.status is not None:
            out["status"] = self.status.value
            out["version"] = self.version
        if self.error is not None:
            out["error"] = self.error.code.value
            out["message"] = self.error.message
        if self.counts is not None:
            out["counts"] = self.counts.model_dump()
        return out
