"""Building one command's changes: each a whole configuration, validated, one version higher.

The pieces ``decider`` (lifecycle commands) and ``runs`` (run and lease commands) share: the
``Changes`` accumulator, rejections, actors, and the field sets several rules write.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from statemachine.commands import Command
from statemachine.decision import Change, Decision, EventType, JobEffect, Outcome
from statemachine.errors import CommandError, ErrorCode, validation_details
from statemachine.model import (
    MAX_HOLDS,
    MAX_LAST_ERROR,
    MAX_SYNC_JSON_BYTES,
    PauseHold,
    SyncConfiguration,
)
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


def _is_time(value: Any) -> bool:
    return value is None or (isinstance(value, datetime) and value.tzinfo is not None)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_text(value: Any) -> bool:
    return value is None or type(value) is str


#: The fields the machine sets from values it computed or already validated, each with what a
#: value must be to need no validation: exactly what validating it would keep unchanged
#: (an aware datetime, an int of the right range, a model instance). A change that sets only
#: these is applied to the validated configuration as a copy, and only the cross-field rules
#: run again; any other field, or a value outside its check, validates the whole model.
TRUSTED_FIELDS: Final[dict[str, Callable[[Any], bool]]] = {
    "status": lambda v: type(v) is SyncStatus,
    "is_active": lambda v: type(v) is bool,
    "paused": lambda v: type(v) is bool,
    "version": lambda v: type(v) is int and v >= 1,
    "updated_at": lambda v: v is not None and _is_time(v),
    "next_sync_at": _is_time,
    "paused_at": _is_time,
    "run_requested_at": _is_time,
    "paused_by_user_id": _is_text,
    "pause_reason": lambda v: v is None or (type(v) is str and len(v) <= MAX_LAST_ERROR),
    "pause_holds": lambda v: (
        type(v) is list and len(v) <= MAX_HOLDS and all(type(h) is PauseHold for h in v)
    ),
    "consecutive_failures": _is_count,
    "queued_sync_job_id": _is_text,
    "queued_full_sync": lambda v: type(v) is bool,
    "pending_full_sync": lambda v: type(v) is bool,
}

#: Tests set this: every trusted change is then also validated in full, and the two must agree.
VERIFY_TRUSTED = False


def _trusted(base: SyncConfiguration, changes: dict[str, Any]) -> SyncConfiguration | None:
    """``base`` with ``changes`` applied without validating it again, when every change is a
    trusted field with a value that passes its check and the result keeps the cross-field
    rules; else None (the caller validates in full, which names what is wrong)."""
    for name, value in changes.items():
        check = TRUSTED_FIELDS.get(name)
        if check is None or not check(value):
            return None
    holds = changes.get("pause_holds")
    if holds is not None:  # never share a list with the caller (a constant's, another sync's)
        changes = {**changes, "pause_holds": list(holds)}
    sync = base.model_copy(update=changes)
    if sync.consistency_problem() is not None:
        return None
    return sync


def build(
    base: SyncConfiguration | dict[str, Any], changes: dict[str, Any]
) -> SyncConfiguration | CommandError:
    """Validate the whole configuration after a change; limits are checked here, once.

    A change of trusted fields only (``TRUSTED_FIELDS``: what the machine computes) is applied
    to the validated ``base`` as a copy, with the cross-field rules checked again: about 2 us
    instead of 9 for validating every field of the model again."""
    if isinstance(base, SyncConfiguration):
        fast = _trusted(base, changes)
        if fast is not None:
            if VERIFY_TRUSTED:
                full = _validated(base, changes)
                if not isinstance(full, SyncConfiguration) or full.__dict__ != fast.__dict__:
                    raise AssertionError(f"trusted change differs from validation: {changes}")
            return fast
    return _validated(base, changes)


def _validated(
    base: SyncConfiguration | dict[str, Any], changes: dict[str, Any]
) -> SyncConfiguration | CommandError:
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
                trigger=trigger or self.command.type._value_,
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
