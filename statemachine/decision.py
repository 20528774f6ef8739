"""What a decision is: its outcome, the changes to persist, and the event type of each change.

Values only: no machine and no ``transitions`` here, so the client (which reads outcomes and
event types off the wire) imports this without building the lifecycle machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from statemachine.errors import CommandError
from statemachine.model import SyncConfiguration
from statemachine.status import SyncStatus

__all__ = ["Change", "Decision", "EventType", "Outcome"]


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
