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

__all__ = ["RESULT_TYPE", "Checkpoint", "CommandResult", "LifecycleEvent"]

RESULT_TYPE = "sync.command_result"


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
    ``manual`` or ``resume``).
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

    def summary(self) -> dict[str, Any]:
        """A one-line view for people (the CLI)."""
        out: dict[str, Any] = {"outcome": self.outcome.value, "command_type": self.command_type}
        if self.status is not None:
            out["status"] = self.status.value
            out["version"] = self.version
        if self.error is not None:
            out["error"] = self.error.code.value
            out["message"] = self.error.message
        return out
