"""Building one command's changes: each a whole configuration, validated, one version higher.

The pieces ``decider`` (lifecycle commands) and ``runs`` (run and lease commands) share: the
``Changes`` accumulator, rejections, actors, and the field sets several rules write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from statemachine.commands import Command
from statemachine.decision import Change, Decision, EventType, JobEffect, Outcome
from statemachine.errors import CommandError, ErrorCode, validation_details
from statemachine.model import MAX_SYNC_JSON_BYTES, SyncConfiguration
from statemachine.status import SyncStatus

__all__ = [
    "LOCK_RELEASED",
    "PAUSE_CLEARED",
    "SYSTEM_ACTOR",
    "Changes",
    "actor",
    "build",
    "reject",
    "status_fields",
    "user_of",
    "within_size",
]

SYSTEM_ACTOR: Final = "system"

PAUSE_CLEARED: Final[dict[str, Any]] = {
    "paused": False,
    "pause_reason": None,
    "paused_at": None,
    "paused_by_user_id": None,
    "pause_holds": [],
}
LOCK_RELEASED: Final[dict[str, Any]] = {
    "locked_by_worker_id": None,
    "locked_at": None,
    "lock_expires_at": None,
    "lock_token": None,
    "current_full_sync": False,
}


def reject(
    code: ErrorCode,
    message: str,
    sync: SyncConfiguration | None = None,
    details: dict[str, Any] | None = None,
) -> Decision:
    return Decision(
        outcome=Outcome.REJECTED,
        sync=sync,
        error=CommandError(code=code, message=message, details=details or {}),
        visible=sync is not None,
    )


def actor(command: Command, user_id: str | None) -> str:
    """Who made a change: the command's own actor (a bulk operation's), the data's user, else
    the command's caller, else its key; ``system`` for a change the service makes itself."""
    if command.actor is not None:
        return command.actor
    if command.command_id is None:
        return SYSTEM_ACTOR
    if user_id:
        return f"user:{user_id}"
    if command.caller:
        return command.caller if command.caller.startswith("key:") else f"user:{command.caller}"
    return f"key:{command.key_id}" if command.key_id else "unknown"


def user_of(command: Command, given: str | None, field: str) -> str | CommandError:
    """The user id a field of the model stores: the data's, else the command's caller (the
    key's owner, else ``key:<key id>``); without either, a ``validation_error`` naming it."""
    if given:
        return given
    if command.caller:
        return command.caller
    return CommandError(
        code=ErrorCode.VALIDATION_ERROR,
        message=f"{field} is required (the API key has no user to take it from)",
        details={"errors": [{"field": field, "problem": "required: no caller to take it from"}]},
    )


def build(
    base: SyncConfiguration | dict[str, Any], changes: dict[str, Any]
) -> SyncConfiguration | CommandError:
    """Validate the whole configuration after a change; limits are checked here, once."""
    # The model's field values (its __dict__: what dict(model) yields, without pydantic's
    # per-field iterator, ~10 us) keep nested models as they are (already valid); the top
    # level and every cross-field rule are validated again.
    raw = dict(base.__dict__ if isinstance(base, SyncConfiguration) else base)
    raw.update(changes)
    try:
        return SyncConfiguration.model_validate(raw)
    except ValidationError as exc:
        details = validation_details(exc)
        fields = ", ".join(e["field"] for e in details["errors"][:5])
        return CommandError(
            code=ErrorCode.VALIDATION_ERROR,
            message=f"invalid configuration: {fields}",
            details=details,
        )


def within_size(sync: SyncConfiguration) -> SyncConfiguration | CommandError:
    """A configuration whose JSON exceeds ``MAX_SYNC_JSON_BYTES`` is refused as ``too_large``."""
    size = len(sync.model_dump_json())
    if size <= MAX_SYNC_JSON_BYTES:
        return sync
    return CommandError(
        code=ErrorCode.TOO_LARGE,
        message=f"the configuration would be {size} bytes as JSON; limit {MAX_SYNC_JSON_BYTES}",
        details={"size_bytes": size, "limit": MAX_SYNC_JSON_BYTES},
    )


def status_fields(status: SyncStatus) -> dict[str, Any]:
    return {
        "status": status,
        "is_active": status is SyncStatus.ACTIVE,
        "paused": status is SyncStatus.SUSPENDED,
    }


class Changes:
    """Accumulates the changes of one command, each a new version of the sync."""

    def __init__(self, sync: SyncConfiguration, command: Command, now: datetime) -> None:
        self.before = sync
        self.sync = sync
        self.command = command
        self.now = now
        self.items: list[Change] = []

    def add(
        self,
        event_type: EventType,
        fields: dict[str, Any],
        *,
        actor: str,
        reason: str | None = None,
        trigger: str | None = None,
        system: bool = False,
        jobs: tuple[JobEffect, ...] = (),
        **extra: Any,
    ) -> CommandError | None:
        before = self.sync
        built = build(before, {**fields, "updated_at": self.now, "version": before.version + 1})
        if isinstance(built, CommandError):
            return built
        status_changed = built.status is not before.status
        self.items.append(
            Change(
                event_type=EventType.STATUS_CHANGED if status_changed else event_type,
                sync=built,
                trigger=trigger or self.command.type.value,
                actor=actor,
                reason=reason,
                from_status=before.status,
                to_status=built.status,
                system=system,
                extra=extra,
                jobs=jobs,
            )
        )
        self.sync = built
        return None

    def result(self, problem: CommandError | None, run: dict[str, Any] | None = None) -> Decision:
        """The command's decision: rejected on ``problem``, else applied with every change.

        ``run`` (what the worker needs to know about its run) is kept only when applied.
        """
        if problem is not None:
            return Decision(outcome=Outcome.REJECTED, sync=self.before, error=problem)
        return Decision(
            outcome=Outcome.APPLIED, sync=self.before, changes=tuple(self.items), run=run
        )
