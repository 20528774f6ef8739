"""``decide``: what one command does to one sync, and the lifecycle commands' effects.

``decide(sync, command, now, policy)`` returns what should happen (the new sync, one
``Change`` per persisted change, the outcome or the error) and changes nothing itself:
persistence and publishing belong to ``events``. The table (``statemachine.table``) says
whether a command is allowed; run and lease commands are applied by ``statemachine.runs``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from statemachine import holds
from statemachine.changes import (
    LOCK_RELEASED,
    PAUSE_CLEARED,
    Changes,
    actor,
    build,
    reject,
    status_fields,
    user_of,
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
    SystemData,
    SystemTrigger,
    TriggerData,
    UpdateData,
)
from statemachine.decision import Change, Decision, EventType, JobTrigger, Outcome
from statemachine.errors import CommandError, ErrorCode, bounded
from statemachine.jobs import interrupted
from statemachine.model import PauseHold, SyncConfiguration
from statemachine.runs import DEFAULT_POLICY, Policy, apply_run, retry_failed
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

    plan = _release_plan(sync, command, now)
    if isinstance(plan, CommandError):
        return Decision(outcome=Outcome.REJECTED, sync=sync, error=plan)
    left = None if plan is None else len(plan.kept)
    # ``_value_``: the member's value without the ``value`` property's Python call (hot path)
    kind: str = command.type._value_
    dest = fire(sync, kind, policy, left)
    if dest is None:
        allowed = allowed_commands(sync.status, locked=sync.lock_token is not None)
        return reject(
            ErrorCode.INVALID_TRANSITION,
            f"{command.type.value} is not allowed from status {sync.status.value}",
            sync,
            {"current_status": sync.status.value, "allowed_commands": allowed},
        )
    if (kind, sync.status) in NOOPS or _names_a_hold_not_held(sync, data):
        return Decision(outcome=Outcome.NOOP, sync=sync)

    decision = _apply(Changes(sync, command, now), command, data, dest, policy, plan)
    if decision.outcome is Outcome.APPLIED and not decision.changes:
        # A pause that changed no hold, a resume that released none: nothing to persist.
        return Decision(outcome=Outcome.NOOP, sync=sync)
    return decision


def _names_a_hold_not_held(sync: SyncConfiguration, data: Any) -> bool:
    """A resume naming a hold (without ``force``) that the sync does not hold changes
    nothing, whatever the status (a bulk undo of a FAILED sync does not retry it)."""
    if not isinstance(data, ResumeData) or data.hold is None or data.force:
        return False
    return all(h.hold != data.hold for h in sync.pause_holds)


def _release_plan(
    sync: SyncConfiguration, command: Command, now: datetime
) -> holds.Release | CommandError | None:
    """What a resume (or an expiry, or an update's resume) of a SUSPENDED sync releases."""
    if sync.status is not S.SUSPENDED:
        return None
    if command.type is SystemTrigger.PAUSE_EXPIRED:
        return holds.expired(sync, now)
    data = command.data
    if isinstance(data, UpdateData) and (data.is_active or data.status is S.ACTIVE):
        data = ResumeData(resumed_by_user_id=data.updated_by_user_id)
    if isinstance(data, ResumeData):
        return holds.released(sync, command, data)
    return None


def _create(command: Command, data: CreateData, now: datetime) -> Decision:
    status = SyncStatus(data.initial_status)
    creator = user_of(command, data.created_by_user_id, "created_by_user_id")
    if isinstance(creator, CommandError):
        return Decision(outcome=Outcome.REJECTED, sync=None, error=creator, visible=False)
    fields: dict[str, Any] = data.model_dump(
        exclude_none=True, exclude={"initial_status", "reason"}
    )
    fields.update(
        created_by_user_id=creator,
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
        hold = PauseHold(
            hold=holds.plain_label(creator),
            reason=data.reason or "created suspended",
            paused_at=now,
            paused_by_user_id=creator,
        )
        fields.update(holds.hold_fields([hold]))
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


def _apply(
    ch: Changes,
    command: Command,
    data: Any,
    dest: SyncStatus,
    policy: Policy,
    plan: holds.Release | None,
) -> Decision:
    """What a command the table allowed does: lifecycle commands here, holds in ``holds``,
    runs in ``runs``."""
    now = ch.now
    problem: CommandError | None = None
    if ch.sync.status is S.FAILED and isinstance(data, TriggerData):
        by, full = actor(command, data.requested_by_user_id), data.mode == "full"
        return ch.result(retry_failed(ch, by, JobTrigger.MANUAL, full=full))
    if ch.sync.status is S.FAILED and isinstance(data, ResumeData):
        by = actor(command, data.resumed_by_user_id)
        return ch.result(retry_failed(ch, by, JobTrigger.RESUME, full=data.mode == "full"))
    match data:
        case PauseData():
            problem = holds.pause(ch, command, data, dest)
        case ResumeData():
            if plan is not None:
                problem = holds.resume(ch, command, data, plan, dest)
        case SystemData() if command.type is SystemTrigger.PAUSE_EXPIRED:
            if plan is not None:
                problem = holds.expire(ch, command, dest)
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
            # Its run (if one holds the lock) and its queued run will not finish: interrupted.
            fields.update(queued_sync_job_id=None, queued_full_sync=False)
            problem = ch.add(
                EventType.UPDATED,
                fields,
                actor=actor(command, user),
                reason=data.reason,
                jobs=interrupted(
                    ch.sync,
                    now,
                    f"interrupted by {command.type.value}"
                    + (f": {data.reason}" if data.reason else ""),
                ),
            )
        case UpdateData():
            return _update(ch, command, data, policy, plan)
        case _:
            return apply_run(ch, command, data, dest, policy)
    return ch.result(problem)


def _update(
    ch: Changes,
    command: Command,
    data: UpdateData,
    policy: Policy,
    plan: holds.Release | None,
) -> Decision:
    """``sync.update``: the configuration fields as one version, then (``is_active`` or
    ``status``) a plain pause or resume as the next, in the one command. Nothing changed
    (only a pause of a paused sync, or a resume of a running one): ``noop``."""
    sync = ch.sync
    config = data.model_dump(
        exclude_unset=True, exclude={"updated_by_user_id", "is_active", "status"}
    )
    provider = config.get("provider")
    if provider is not None and sync.provider is not None and provider != sync.provider:
        return ch.result(
            CommandError(
                code=ErrorCode.VALIDATION_ERROR,
                message="provider cannot be changed once set",
                details={
                    "errors": [{"field": "provider", "problem": "cannot be changed once set"}]
                },
            )
        )
    wanted = data.is_active if data.is_active is not None else None
    if wanted is None and data.status is not None:
        wanted = data.status is S.ACTIVE
    status_command = None if wanted is None else CommandType.RESUME if wanted else CommandType.PAUSE
    status_dest = None
    if status_command is not None:
        left = None if plan is None else len(plan.kept)
        status_dest = fire(sync, status_command.value, policy, left)
        if status_dest is None:
            return reject(
                ErrorCode.INVALID_TRANSITION,
                f"{'is_active' if data.is_active is not None else 'status'}: a "
                f"{status_command.value} is not allowed from status {sync.status.value}",
                sync,
                {
                    "current_status": sync.status.value,
                    "allowed_commands": allowed_commands(sync.status, sync.lock_token is not None),
                },
            )
        # A status the sync already has is no change (an update pausing a paused sync
        # places no hold: it states the status, it is not a pause of its own).
        paused_already = status_command is CommandType.PAUSE and sync.status is S.SUSPENDED
        if (status_command.value, sync.status) in NOOPS or paused_already:
            status_command = None
    problem: CommandError | None = None
    if config:
        problem = ch.add(EventType.UPDATED, config, actor=actor(command, data.updated_by_user_id))
        if problem is None:
            sized = within_size(ch.sync)
            problem = sized if isinstance(sized, CommandError) else None
    if problem is None and status_command is not None and status_dest is not None:
        if status_command is CommandType.PAUSE:
            pause = PauseData(paused_by_user_id=data.updated_by_user_id)
            problem = holds.pause(ch, command, pause, status_dest)
        elif sync.status is S.FAILED:
            problem = retry_failed(ch, actor(command, data.updated_by_user_id), JobTrigger.RESUME)
        elif plan is not None:
            resume = ResumeData(resumed_by_user_id=data.updated_by_user_id)
            problem = holds.resume(ch, command, resume, plan, status_dest)
    if problem is None and not ch.items:
        return Decision(outcome=Outcome.NOOP, sync=sync)
    return ch.result(problem)
