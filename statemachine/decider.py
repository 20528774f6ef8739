"""``decide``: what one command does to one sync, and the lifecycle commands' effects.

``decide(sync, command, now, policy)`` returns what should happen (the new sync, one
``Change`` per persisted change, the outcome or the error) and changes nothing itself:
persistence and publishing belong to ``events``. The table (``statemachine.table``) says
whether a command is allowed; run and lease commands are applied by ``statemachine.runs``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from statemachine.changes import (
    LOCK_RELEASED,
    PAUSE_CLEARED,
    Changes,
    actor,
    build,
    reject,
    status_fields,
    within_size,
)
from statemachine.commands import (
    ActivateData,
    ArchiveData,
    CancelData,
    Command,
    CommandType,
    CreateData,
    PauseData,
    ResumeData,
    UpdateData,
)
from statemachine.decision import Change, Decision, EventType, Outcome
from statemachine.errors import CommandError, ErrorCode, bounded
from statemachine.model import SyncConfiguration
from statemachine.runs import DEFAULT_POLICY, Policy, apply_run, request_run
from statemachine.status import SyncStatus
from statemachine.table import NOOPS, allowed_commands, fire

__all__ = ["decide"]

S = SyncStatus


def decide(
    sync: SyncConfiguration | None,
    command: Command,
    now: datetime,
    policy: Policy = DEFAULT_POLICY,
) -> Decision:
    """Decide what ``command`` does to ``sync`` (None: no such sync) at time ``now``. Pure."""
    if sync is not None and (
        sync.internal_id != command.internal_id or sync.namespace_id != command.namespace_id
    ):
        # Another tenant's sync: the caller learns nothing about it.
        if command.type is CommandType.CREATE:
            return reject(ErrorCode.ALREADY_EXISTS, "a sync with this id already exists")
        return reject(ErrorCode.NOT_FOUND, f"sync {bounded(command.sync_config_id)} not found")

    current_version = sync.version if sync is not None else 0
    if command.expected_version is not None and command.expected_version != current_version:
        return reject(
            ErrorCode.VERSION_CONFLICT,
            f"expected version {command.expected_version}, current version is {current_version}",
            sync,
            {"expected_version": command.expected_version, "current_version": current_version},
        )

    data = command.data
    if command.type is CommandType.CREATE:
        assert isinstance(data, CreateData)  # noqa: S101 - parse_data pairs type and data
        if sync is not None:
            return reject(ErrorCode.ALREADY_EXISTS, "a sync with this id already exists", sync)
        return _create(command, data, now)

    if sync is None:
        return reject(ErrorCode.NOT_FOUND, f"sync {bounded(command.sync_config_id)} not found")

    dest = fire(sync, command.type.value, policy)
    if dest is None:
        allowed = allowed_commands(sync.status, locked=sync.lock_token is not None)
        return reject(
            ErrorCode.INVALID_TRANSITION,
            f"{command.type.value} is not allowed from status {sync.status.value}",
            sync,
            {"current_status": sync.status.value, "allowed_commands": allowed},
        )
    if (command.type.value, sync.status) in NOOPS:
        return Decision(outcome=Outcome.NOOP, sync=sync)

    return _apply(Changes(sync, command, now), command, data, dest, policy)


def _create(command: Command, data: CreateData, now: datetime) -> Decision:
    status = SyncStatus(data.initial_status)
    fields: dict[str, Any] = data.model_dump(
        exclude_none=True, exclude={"initial_status", "reason"}
    )
    fields.update(
        sync_config_id=command.sync_config_id,
        internal_id=command.internal_id,
        namespace_id=command.namespace_id,
        created_at=now,
        updated_at=now,
        version=1,
        # A PENDING sync is due at once: its first (full) run is requested by the scheduler.
        next_sync_at=now if status is S.PENDING else None,
        **status_fields(status),
    )
    if status is S.SUSPENDED:
        fields.update(
            pause_reason=data.reason or "created suspended",
            paused_at=now,
            paused_by_user_id=data.created_by_user_id,
        )
    built = build(fields, {})
    if not isinstance(built, CommandError):
        built = within_size(built)
    if isinstance(built, CommandError):
        return Decision(outcome=Outcome.REJECTED, sync=None, error=built, visible=False)
    change = Change(
        event_type=EventType.CREATED,
        sync=built,
        trigger=command.type.value,
        actor=actor(command, data.created_by_user_id),
        reason=data.reason,
        from_status=None,
        to_status=status,
    )
    return Decision(outcome=Outcome.APPLIED, sync=None, changes=(change,))


def _apply(ch: Changes, command: Command, data: Any, dest: SyncStatus, policy: Policy) -> Decision:
    """What a command the table allowed does: lifecycle commands here, runs in ``runs``."""
    now = ch.now
    problem: CommandError | None = None
    match data:
        case PauseData():
            problem = ch.add(
                EventType.UPDATED,
                {
                    **status_fields(dest),
                    # Always set while paused, so a list of paused syncs says why.
                    "pause_reason": data.reason or f"paused by {data.paused_by_user_id}",
                    "paused_at": now,
                    "paused_by_user_id": data.paused_by_user_id,
                },
                actor=actor(command, data.paused_by_user_id),
                reason=data.reason,
            )
        case ResumeData():
            by = actor(command, data.resumed_by_user_id)
            problem = ch.add(
                EventType.UPDATED,
                {**status_fields(dest), **PAUSE_CLEARED, "consecutive_failures": 0},
                actor=by,
            )
            due = ch.sync.next_sync_at is None or ch.sync.next_sync_at <= now
            if problem is None and due and ch.sync.lock_token is None:
                request_run(ch, by)
        case ActivateData():
            problem = ch.add(
                EventType.UPDATED,
                {**status_fields(dest), "next_sync_at": now},
                actor=actor(command, data.activated_by_user_id),
            )
        case CancelData() | ArchiveData():
            user = (
                data.canceled_by_user_id
                if isinstance(data, CancelData)
                else data.archived_by_user_id
            )
            fields: dict[str, Any] = {
                **status_fields(dest),
                **PAUSE_CLEARED,
                "next_sync_at": None,
            }
            if isinstance(data, ArchiveData):
                fields.update(LOCK_RELEASED)  # an archived sync has no run to report on
            problem = ch.add(
                EventType.UPDATED, fields, actor=actor(command, user), reason=data.reason
            )
        case UpdateData():
            problem = ch.add(
                EventType.UPDATED,
                data.model_dump(exclude_unset=True, exclude={"updated_by_user_id"}),
                actor=actor(command, data.updated_by_user_id),
            )
            if problem is None:
                sized = within_size(ch.sync)
                problem = sized if isinstance(sized, CommandError) else None
        case _:
            return apply_run(ch, command, data, dest, policy)
    return ch.result(problem)
