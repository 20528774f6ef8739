"""What a decision is: its outcome, the changes to persist, and the event type of each change.

Values only: no machine and no ``transitions`` here, so the client (which reads outcomes and
event types off the wire) imports this without building the lifecycle machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from statemachine.errors import CommandError
from statemachine.model import SyncConfiguration
from statemachine.status import SyncStatus

__all__ = [
    "Change",
    "Decision",
    "EventType",
    "JobEffect",
    "JobPhase",
    "JobStatus",
    "JobTrigger",
    "Outcome",
]


class Outcome(StrEnum):
    APPLIED = "applied"
    NOOP = "noop"
    REJECTED = "rejected"


class EventType(StrEnum):
    """``ce_type`` values on the lifecycle topic."""

    CREATED = "sync.created"
    UPDATED = "sync.updated"
    STATUS_CHANGED = "sync.status_changed"
    RUN_REQUESTED = "sync.run_requested"
    RUN_STARTED = "sync.run_started"
    LEASE_EXTENDED = "sync.run_lease_extended"
    RUN_CHECKPOINTED = "sync.run_checkpointed"
    RUN_COMPLETED = "sync.run_completed"
    RUN_FAILED = "sync.run_failed"
    LOCK_EXPIRED = "sync.lock_expired"
    LOCK_RELEASED = "sync.lock_released"
    #: A pause hold was placed, changed or released and the status did not change.
    HOLDS_CHANGED = "sync.holds_changed"


class JobTrigger(StrEnum):
    """Why a run (a job) was requested."""

    SCHEDULED = "scheduled"
    MANUAL = "manual"
    RESUME = "resume"


class JobStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class JobPhase(StrEnum):
    """Where a ``running`` job is; a finished job has no phase."""

    QUEUED = "queued"
    RUNNING = "running"


@dataclass(frozen=True, slots=True)
class JobEffect:
    """The state of one job (a requested run) after a change: the row ``sync_jobs`` holds.

    The decider declares it, the service writes it in the change's transaction. ``trigger``
    is set where the change may create the job (a request, a start without a queued job);
    a finished job (``phase`` None) is final: later effects on it are ignored.
    """

    sync_job_id: str
    status: JobStatus
    phase: JobPhase | None
    trigger: JobTrigger | None = None
    full_sync: bool = False
    files_synced: int = 0
    files_failed: int = 0
    error: str | None = None
    current_cursor: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One persisted change: raises the sync's version by 1 and emits exactly one event."""

    event_type: EventType
    sync: SyncConfiguration
    trigger: str
    actor: str
    reason: str | None = None
    from_status: SyncStatus | None = None
    to_status: SyncStatus | None = None
    system: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    jobs: tuple[JobEffect, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """What a command does: the outcome, the sync after it, and the changes to persist."""

    outcome: Outcome
    sync: SyncConfiguration | None
    changes: tuple[Change, ...] = ()
    error: CommandError | None = None
    visible: bool = True
    run: dict[str, Any] | None = None

    @property
    def final(self) -> SyncConfiguration | None:
        return self.changes[-1].sync if self.changes else self.sync

    @property
    def sync_job_id(self) -> str | None:
        """The job of the run this decision requested (queued), if it requested one."""
        for change in reversed(self.changes):
            for job in change.jobs:
                if job.phase is JobPhase.QUEUED:
                    return job.sync_job_id
        return None
