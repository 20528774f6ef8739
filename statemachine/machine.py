"""The lifecycle machine: one transition table, one ``transitions`` Machine, a pure ``decide``.

``decide(sync, command, now)`` returns what should happen (the new sync, one ``Change`` per
persisted change, the outcome or the error) and changes nothing itself: persistence and
publishing belong to ``events``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import ValidationError
from transitions import Machine, MachineError

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
from statemachine.errors import CommandError, ErrorCode, validation_details
from statemachine.model import SyncConfiguration
from statemachine.status import SyncStatus

__all__ = [
    "TABLE",
    "Change",
    "Decision",
    "EventType",
    "Outcome",
    "Rule",
    "allowed_commands",
    "decide",
    "mermaid",
]

S = SyncStatus
C = CommandType
LIVE: Final = (S.DRAFT, S.PENDING, S.ACTIVE, S.SUSPENDED)


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
    RUN_CHECKPOINTED = "sync.run_checkpointed"
    RUN_COMPLETED = "sync.run_completed"
    RUN_FAILED = "sync.run_failed"
    LOCK_EXPIRED = "sync.lock_expired"


@dataclass(frozen=True, slots=True)
class Rule:
    """``command`` is allowed from ``sources``; it moves to ``dest`` (None: status unchanged).

    A ``noop`` rule accepts the command and does nothing (repeated pause, resume, ...).
    """

    command: CommandType
    sources: tuple[SyncStatus, ...]
    dest: SyncStatus | None = None
    noop: bool = False


#: The one transition table. The machine, ``allowed_commands`` and the diagram all read it.
TABLE: Final[tuple[Rule, ...]] = (
    Rule(C.ACTIVATE, (S.DRAFT,), S.PENDING),
    Rule(C.ACTIVATE, (S.PENDING, S.ACTIVE), noop=True),
    Rule(C.UPDATE, LIVE),
    Rule(C.PAUSE, (S.PENDING, S.ACTIVE), S.SUSPENDED),
    Rule(C.PAUSE, (S.SUSPENDED,), noop=True),
    Rule(C.RESUME, (S.SUSPENDED,), S.ACTIVE),
    Rule(C.RESUME, (S.ACTIVE, S.PENDING), noop=True),
    Rule(C.CANCEL, LIVE, S.CANCELED),
    Rule(C.CANCEL, (S.CANCELED,), noop=True),
    Rule(C.ARCHIVE, (*LIVE, S.COMPLETED, S.CANCELED), S.ARCHIVED),
    Rule(C.ARCHIVE, (S.ARCHIVED,), noop=True),
)

#: Statuses a new sync may start in (``initial_status`` of ``sync.create``).
INITIAL_STATUSES: Final = (S.PENDING, S.DRAFT, S.SUSPENDED)

_NOOPS: Final[frozenset[tuple[CommandType, SyncStatus]]] = frozenset(
    (r.command, s) for r in TABLE if r.noop for s in r.sources
)


def _transitions_spec() -> list[dict[str, Any]]:
    return [
        {
            "trigger": rule.command.value,
            "source": list(rule.sources),
            "dest": rule.dest if rule.dest is not None else None,
        }
        for rule in TABLE
    ]


class _Cursor:
    """The one model of the one Machine: it only carries a status while a command is decided."""

    state: SyncStatus


_MACHINE: Final = Machine(
    model=None,
    states=list(SyncStatus),
    transitions=_transitions_spec(),
    initial=None,
    auto_transitions=False,
    ignore_invalid_triggers=False,
)
_CURSOR: Final = _Cursor()
_MACHINE.add_model(_CURSOR, initial=S.PENDING)


def _fire(status: SyncStatus, command: CommandType) -> SyncStatus | None:
    """Run ``command`` through the machine from ``status``; the new status, or None if refused."""
    _MACHINE.set_state(status, model=_CURSOR)
    try:
        _CURSOR.trigger(command.value)  # type: ignore[attr-defined]
    except MachineError:
        return None
    return SyncStatus(_CURSOR.state)


def allowed_commands(status: SyncStatus) -> list[str]:
    """Commands the table accepts from ``status`` (for ``invalid_transition`` details)."""
    return sorted(t for t in _MACHINE.get_triggers(status) if t in CommandType._value2member_map_)


def mermaid() -> str:
    """The state diagram of ``TABLE`` as Mermaid, drawn by transitions' GraphMachine."""
    from transitions.extensions import GraphMachine

    holder = _Cursor()
    GraphMachine(
        model=holder,
        states=[s for s in SyncStatus if any(s in r.sources or s == r.dest for r in TABLE)],
        transitions=[t for t in _transitions_spec() if t["dest"] is not None],
        initial=S.PENDING,
        auto_transitions=False,
        graph_engine="mermaid",
        title="synclife sync lifecycle",
    )
    return str(holder.get_graph().draw(None))  # type: ignore[attr-defined]


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
    extra: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """What a command does: the outcome, the sync after it, and the changes to persist."""

    outcome: Outcome
    sync: SyncConfiguration | None
    changes: tuple[Change, ...] = ()
    error: CommandError | None = None
    visible: bool = True

    @property
    def final(self) -> SyncConfiguration | None:
        return self.changes[-1].sync if self.changes else self.sync


def _reject(
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


def _actor(command: Command, user_id: str | None) -> str:
    if user_id:
        return f"user:{user_id}"
    return f"key:{command.key_id}" if command.key_id else "unknown"


def _build(
    base: SyncConfiguration | dict[str, Any], changes: dict[str, Any]
) -> SyncConfiguration | CommandError:
    """Validate the whole configuration after a change; limits are checked here, once."""
    raw = base.model_dump() if isinstance(base, SyncConfiguration) else dict(base)
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


_PAUSE_CLEARED: Final[dict[str, Any]] = {
    "paused": False,
    "pause_reason": None,
    "paused_at": None,
    "paused_by_user_id": None,
}


def _status_fields(status: SyncStatus) -> dict[str, Any]:
    return {"status": status, "is_active": status is S.ACTIVE, "paused": status is S.SUSPENDED}


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
        **_status_fields(status),
    )
    if status is S.SUSPENDED:
        fields.update(
            pause_reason=data.reason or "created suspended",
            paused_at=now,
            paused_by_user_id=data.created_by_user_id,
        )
    built = _build(fields, {})
    if isinstance(built, CommandError):
        return Decision(outcome=Outcome.REJECTED, sync=None, error=built, visible=False)
    change = Change(
        event_type=EventType.CREATED,
        sync=built,
        trigger=command.type.value,
        actor=_actor(command, data.created_by_user_id),
        reason=data.reason,
        from_status=None,
        to_status=status,
    )
    return Decision(outcome=Outcome.APPLIED, sync=None, changes=(change,))


def decide(sync: SyncConfiguration | None, command: Command, now: datetime) -> Decision:
    """Decide what ``command`` does to ``sync`` (None: no such sync) at time ``now``. Pure."""
    if sync is not None and (
        sync.internal_id != command.internal_id or sync.namespace_id != command.namespace_id
    ):
        # Another tenant's sync: the caller learns nothing about it.
        if command.type is C.CREATE:
            return _reject(ErrorCode.ALREADY_EXISTS, "a sync with this id already exists")
        return _reject(ErrorCode.NOT_FOUND, f"sync {command.sync_config_id} not found")

    current_version = sync.version if sync is not None else 0
    if command.expected_version is not None and command.expected_version != current_version:
        return _reject(
            ErrorCode.VERSION_CONFLICT,
            f"expected version {command.expected_version}, current version is {current_version}",
            sync,
            {"expected_version": command.expected_version, "current_version": current_version},
        )

    data = command.data
    if command.type is C.CREATE:
        assert isinstance(data, CreateData)  # noqa: S101 - parse_data pairs type and data
        if sync is not None:
            return _reject(ErrorCode.ALREADY_EXISTS, "a sync with this id already exists", sync)
        return _create(command, data, now)

    if sync is None:
        return _reject(ErrorCode.NOT_FOUND, f"sync {command.sync_config_id} not found")

    dest = _fire(sync.status, command.type)
    if dest is None:
        allowed = allowed_commands(sync.status)
        return _reject(
            ErrorCode.INVALID_TRANSITION,
            f"{command.type.value} is not allowed from status {sync.status.value}",
            sync,
            {"current_status": sync.status.value, "allowed_commands": allowed},
        )
    if (command.type, sync.status) in _NOOPS:
        return Decision(outcome=Outcome.NOOP, sync=sync)

    changes: dict[str, Any] = {"updated_at": now, "version": sync.version + 1}
    changes.update(_status_fields(dest))
    reason: str | None = None
    user: str | None = None
    match data:
        case PauseData():
            user, reason = data.paused_by_user_id, data.reason
            changes.update(pause_reason=reason, paused_at=now, paused_by_user_id=user)
        case ResumeData():
            user = data.resumed_by_user_id
            changes.update(_PAUSE_CLEARED)
        case ActivateData():
            user = data.activated_by_user_id
        case CancelData() | ArchiveData():
            reason = data.reason
            user = (
                data.canceled_by_user_id
                if isinstance(data, CancelData)
                else data.archived_by_user_id
            )
            if sync.status is S.SUSPENDED:
                changes.update(_PAUSE_CLEARED)
        case UpdateData():
            user = data.updated_by_user_id
            changes.update(data.model_dump(exclude_unset=True, exclude={"updated_by_user_id"}))
        case _:  # pragma: no cover - parse_data only builds the types above
            raise TypeError(f"no effect defined for {command.type.value}")

    built = _build(sync, changes)
    if isinstance(built, CommandError):
        return Decision(outcome=Outcome.REJECTED, sync=sync, error=built)
    status_changed = built.status is not sync.status
    change = Change(
        event_type=EventType.STATUS_CHANGED if status_changed else EventType.UPDATED,
        sync=built,
        trigger=command.type.value,
        actor=_actor(command, user),
        reason=reason,
        from_status=sync.status,
        to_status=built.status,
    )
    return Decision(outcome=Outcome.APPLIED, sync=sync, changes=(change,))
