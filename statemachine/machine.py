"""The lifecycle machine: one transition table, one ``transitions`` Machine, a pure ``decide``.

``decide(sync, command, now, policy)`` returns what should happen (the new sync, one
``Change`` per persisted change, the outcome or the error) and changes nothing itself:
persistence and publishing belong to ``events``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
    RunCheckpointData,
    RunCompleteData,
    RunFailData,
    RunHeartbeatData,
    RunStartData,
    SystemData,
    SystemTrigger,
    TriggerData,
    UpdateData,
)
from statemachine.errors import CommandError, ErrorCode, validation_details
from statemachine.model import (
    MAX_LAST_ERROR,
    MAX_SYNC_JSON_BYTES,
    MAX_TRACKED_IDS,
    RunMetrics,
    SyncConfiguration,
    SyncMode,
)
from statemachine.status import RunStatus, SyncStatus

__all__ = [
    "STATUS_ROLES",
    "TABLE",
    "Change",
    "Decision",
    "EventType",
    "Outcome",
    "Policy",
    "Rule",
    "allowed_commands",
    "decide",
    "mermaid",
    "system_command",
]

S = SyncStatus
C = CommandType
T = SystemTrigger
LIVE: Final = (S.DRAFT, S.PENDING, S.ACTIVE, S.SUSPENDED)
SCHEDULABLE: Final = (S.PENDING, S.ACTIVE)
# A worker that holds the lock may report until it releases it, even after a pause or cancel.
REPORTING: Final = (S.ACTIVE, S.SUSPENDED, S.CANCELED)
SYSTEM_ACTOR: Final = "system"

#: The documented role of each of the 13 statuses.
STATUS_ROLES: Final[dict[SyncStatus, str]] = {
    S.DRAFT: "sync status: created as a draft; never scheduled; sync.activate makes it PENDING",
    S.PENDING: "sync status: created, first run not started yet (it is due at once)",
    S.ACTIVE: "sync status: running or polling on its interval",
    S.SUSPENDED: "sync status: paused by a user, or auto-suspended after repeated failures",
    S.COMPLETED: "sync status: an initial_only sync whose run completed (terminal); "
    "also a run status",
    S.CANCELED: "sync status: cancelled by a user (terminal)",
    S.ARCHIVED: "sync status: archived (terminal, final)",
    S.IN_PROGRESS: "run status (last_run_status): the run holds the lock",
    S.COMPLETED_WITH_ERRORS: "run status: completed, some files dead-lettered",
    S.FAILED: "run status: the run failed (a sync that keeps failing is SUSPENDED instead)",
    S.PROCESSING: "never taken: kept for wire compatibility",
    S.UNKNOWN: "never taken: kept for wire compatibility",
    S.SKIPPED: "never taken: kept for wire compatibility",
}


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


@dataclass(frozen=True, slots=True)
class Policy:
    """Knobs of the rules that are settings, not facts of the model."""

    max_consecutive_failures: int = 5
    retry_base_seconds: int = 30
    retry_max_seconds: int = 3600

    def retry_delay(self, failures: int) -> timedelta:
        """Exponential backoff: base, 2 x base, 4 x base, ... capped."""
        exponent = max(0, min(failures - 1, 20))
        return timedelta(seconds=min(self.retry_base_seconds * 2**exponent, self.retry_max_seconds))


DEFAULT_POLICY: Final = Policy()


@dataclass(frozen=True, slots=True)
class Rule:
    """``command`` is allowed from ``sources``; it moves to ``dest`` (None: status unchanged).

    A ``noop`` rule accepts the command and does nothing (repeated pause, resume, ...). A rule
    with a ``condition`` applies only when that check on the sync holds; the first rule of a
    command that applies wins.
    """

    command: CommandType | SystemTrigger
    sources: tuple[SyncStatus, ...]
    dest: SyncStatus | None = None
    noop: bool = False
    condition: str | None = None


#: The one transition table. The machine, ``allowed_commands`` and the diagram all read it.
TABLE: Final[tuple[Rule, ...]] = (
    Rule(C.ACTIVATE, (S.DRAFT,), S.PENDING),
    Rule(C.ACTIVATE, SCHEDULABLE, noop=True),
    Rule(C.UPDATE, LIVE),
    Rule(C.PAUSE, SCHEDULABLE, S.SUSPENDED),
    Rule(C.PAUSE, (S.SUSPENDED,), noop=True),
    Rule(C.RESUME, (S.SUSPENDED,), S.ACTIVE),
    Rule(C.RESUME, SCHEDULABLE, noop=True),
    Rule(C.TRIGGER, SCHEDULABLE),
    Rule(C.CANCEL, LIVE, S.CANCELED),
    Rule(C.CANCEL, (S.CANCELED,), noop=True),
    Rule(C.ARCHIVE, (*LIVE, S.COMPLETED, S.CANCELED), S.ARCHIVED),
    Rule(C.ARCHIVE, (S.ARCHIVED,), noop=True),
    Rule(C.RUN_START, (S.PENDING,), S.ACTIVE),
    Rule(C.RUN_START, (S.ACTIVE,)),
    Rule(C.RUN_HEARTBEAT, REPORTING),
    Rule(C.RUN_CHECKPOINT, REPORTING),
    Rule(C.RUN_COMPLETE, (S.ACTIVE, S.SUSPENDED), S.COMPLETED, condition="initial_only"),
    Rule(C.RUN_COMPLETE, REPORTING),
    Rule(C.RUN_FAIL, (S.ACTIVE,), S.SUSPENDED, condition="fails_out"),
    Rule(C.RUN_FAIL, REPORTING),
    Rule(T.REQUEST_RUN, SCHEDULABLE),
    Rule(T.LOCK_EXPIRED, (S.ACTIVE,), S.SUSPENDED, condition="fails_out"),
    Rule(T.LOCK_EXPIRED, (*REPORTING, S.COMPLETED, S.ARCHIVED)),
)

#: Statuses a new sync may start in (``initial_status`` of ``sync.create``).
INITIAL_STATUSES: Final = (S.PENDING, S.DRAFT, S.SUSPENDED)

_NOOPS: Final[frozenset[tuple[str, SyncStatus]]] = frozenset(
    (r.command.value, s) for r in TABLE if r.noop for s in r.sources
)


def _transitions_spec() -> list[dict[str, Any]]:
    return [
        {
            "trigger": rule.command.value,
            "source": list(rule.sources),
            "dest": rule.dest,
            **({"conditions": [rule.condition]} if rule.condition else {}),
        }
        for rule in TABLE
    ]


class _Cursor:
    """The one model of the one Machine: it carries a sync while a command is decided.

    Its methods are the table's conditions; they only read.
    """

    state: SyncStatus
    sync: SyncConfiguration | None = None
    policy: Policy = DEFAULT_POLICY

    def initial_only(self) -> bool:
        return self.sync is not None and self.sync.sync_mode is SyncMode.INITIAL_ONLY

    def fails_out(self) -> bool:
        """This failure reaches the auto-suspend threshold."""
        return (
            self.sync is not None
            and self.sync.consecutive_failures + 1 >= self.policy.max_consecutive_failures
        )


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


#: (trigger, status) pairs where some rule has a condition: the machine must see the sync.
_CONDITIONAL: Final[frozenset[tuple[str, SyncStatus]]] = frozenset(
    (r.command.value, s) for r in TABLE if r.condition is not None for s in r.sources
)
#: What the machine answered for an unconditional (trigger, status): it depends on nothing else.
_ANSWERS: Final[dict[tuple[str, SyncStatus], SyncStatus | None]] = {}


def _fire(sync: SyncConfiguration, trigger: str, policy: Policy) -> SyncStatus | None:
    """Run ``trigger`` through the machine from the sync's status; the new status, or None.

    Where no rule of ``trigger`` from this status has a condition, the machine's answer
    depends on the pair alone: it is asked once and remembered (the transitions library
    costs ~20 us a call).
    """
    pair = (trigger, sync.status)
    if pair in _CONDITIONAL:
        return _run_machine(sync, trigger, policy)
    if pair not in _ANSWERS:
        _ANSWERS[pair] = _run_machine(sync, trigger, policy)
    return _ANSWERS[pair]


def _run_machine(sync: SyncConfiguration, trigger: str, policy: Policy) -> SyncStatus | None:
    _MACHINE.set_state(sync.status, model=_CURSOR)
    _CURSOR.sync, _CURSOR.policy = sync, policy
    try:
        fired = _CURSOR.trigger(trigger)  # type: ignore[attr-defined]
    except MachineError:
        return None
    finally:
        _CURSOR.sync = None
    return SyncStatus(_CURSOR.state) if fired else None


_LOCK_HOLDER_COMMANDS: Final = frozenset(
    {C.RUN_HEARTBEAT.value, C.RUN_CHECKPOINT.value, C.RUN_COMPLETE.value, C.RUN_FAIL.value}
)


def allowed_commands(status: SyncStatus, locked: bool = True) -> list[str]:
    """Commands the table accepts from ``status`` (for ``invalid_transition`` details).

    Without a run lock, the lock holder's reports are left out: nobody could send them.
    """
    return sorted(
        t
        for t in _MACHINE.get_triggers(status)
        if t in CommandType._value2member_map_ and (locked or t not in _LOCK_HOLDER_COMMANDS)
    )


def mermaid() -> str:
    """The state diagram of ``TABLE`` as Mermaid, drawn by transitions' GraphMachine."""
    from transitions.extensions import GraphMachine

    holder = _Cursor()
    GraphMachine(
        model=holder,
        states=[s for s in SyncStatus if any(s in r.sources or s == r.dest for r in TABLE)],
        transitions=[t for t in _transitions_spec() if t["dest"] is not None],
        show_conditions=True,
        initial=S.PENDING,
        auto_transitions=False,
        graph_engine="mermaid",
        title="synclife sync lifecycle",
    )
    diagram = str(holder.get_graph().draw(None))  # type: ignore[attr-defined]
    # Keep the structure only: no highlighting of the helper model's current state.
    return "\n".join(
        line
        for line in diagram.splitlines()
        if not line.strip().startswith(("classDef ", "Class ", "class "))
    )


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
    if command.command_id is None:
        return SYSTEM_ACTOR
    if user_id:
        return f"user:{user_id}"
    return f"key:{command.key_id}" if command.key_id else "unknown"


def _build(
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


_PAUSE_CLEARED: Final[dict[str, Any]] = {
    "paused": False,
    "pause_reason": None,
    "paused_at": None,
    "paused_by_user_id": None,
}
_LOCK_RELEASED: Final[dict[str, Any]] = {
    "locked_by_worker_id": None,
    "locked_at": None,
    "lock_expires_at": None,
    "lock_token": None,
}


def _within_size(sync: SyncConfiguration) -> SyncConfiguration | CommandError:
    """A configuration whose JSON exceeds ``MAX_SYNC_JSON_BYTES`` is refused as ``too_large``."""
    size = len(sync.model_dump_json())
    if size <= MAX_SYNC_JSON_BYTES:
        return sync
    return CommandError(
        code=ErrorCode.TOO_LARGE,
        message=f"the configuration would be {size} bytes as JSON; limit {MAX_SYNC_JSON_BYTES}",
        details={"size_bytes": size, "limit": MAX_SYNC_JSON_BYTES},
    )


def _status_fields(status: SyncStatus) -> dict[str, Any]:
    return {"status": status, "is_active": status is S.ACTIVE, "paused": status is S.SUSPENDED}


def _checkpoint(sync: SyncConfiguration) -> dict[str, Any]:
    """Where the next run resumes (empty when resuming is off or nothing is saved)."""
    if not sync.resume_enabled:
        return {
            "resume_cursor": None,
            "resume_last_primary_key": None,
            "resume_objects_processed": 0,
        }
    return {
        "resume_cursor": sync.resume_cursor,
        "resume_last_primary_key": sync.resume_last_primary_key,
        "resume_objects_processed": sync.resume_objects_processed,
    }


def system_command(sync: SyncConfiguration, trigger: SystemTrigger) -> Command:
    """A change the service makes itself (scheduler, lease reaper): no command id."""
    return Command(
        command_id=None,
        type=trigger,
        sync_config_id=sync.sync_config_id,
        internal_id=sync.internal_id,
        namespace_id=sync.namespace_id,
        data=SystemData(),
    )


class _Changes:
    """Accumulates the changes of one command, each a new version of the sync."""

    def __init__(
        self, sync: SyncConfiguration, command: Command, now: datetime, policy: Policy
    ) -> None:
        self.sync = sync
        self.command = command
        self.now = now
        self.policy = policy
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
        **extra: Any,
    ) -> CommandError | None:
        before = self.sync
        built = _build(before, {**fields, "updated_at": self.now, "version": before.version + 1})
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
            )
        )
        self.sync = built
        return None

    def request_run(self, actor: str, trigger: str | None = None) -> None:
        """A run is due: say so, with where it starts from, and re-request after an interval."""
        sync = self.sync
        self.add(
            EventType.RUN_REQUESTED,
            {
                "run_requested_at": self.now,
                "next_sync_at": self.now + timedelta(seconds=sync.polling_interval_seconds),
            },
            actor=actor,
            trigger=trigger,
            system=actor == SYSTEM_ACTOR,
            modified_since=sync.last_sync_at,
            checkpoint=_checkpoint(sync),
        )


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
        **_status_fields(status),
    )
    if status is S.SUSPENDED:
        fields.update(
            pause_reason=data.reason or "created suspended",
            paused_at=now,
            paused_by_user_id=data.created_by_user_id,
        )
    built = _build(fields, {})
    if not isinstance(built, CommandError):
        built = _within_size(built)
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


def _lock_check(
    sync: SyncConfiguration,
    data: RunHeartbeatData | RunCheckpointData | RunCompleteData | RunFailData,
) -> Decision | None:
    """A report must carry the current run id and lock token: anything else is stale."""
    if (
        sync.lock_token is None
        or data.lock_token != sync.lock_token
        or data.run_id != sync.current_sync_run_id
    ):
        return _reject(
            ErrorCode.LOCK_LOST,
            "this worker no longer holds the run lock (stale run id or lock token)",
            sync,
            {"current_run_id": str(sync.current_sync_run_id) if sync.current_sync_run_id else None},
        )
    return None


def _run_info(sync: SyncConfiguration) -> dict[str, Any]:
    return {
        "run_id": str(sync.current_sync_run_id) if sync.current_sync_run_id else None,
        "lock_token": sync.lock_token,
        "lease_expires_at": sync.lock_expires_at.isoformat() if sync.lock_expires_at else None,
        "stop_requested": sync.status is not S.ACTIVE,
    }


def _failure(
    ch: _Changes,
    dest: SyncStatus,
    error: str,
    event_type: EventType,
    actor: str,
    reason: str | None,
    **extra: Any,
) -> CommandError | None:
    """A failed run (reported, or its lease expired): count it, back off, maybe auto-suspend."""
    sync = ch.sync
    failures = sync.consecutive_failures + 1
    last_error = error[:MAX_LAST_ERROR]
    fields: dict[str, Any] = {
        **_LOCK_RELEASED,
        "consecutive_failures": failures,
        "last_error": last_error,
        "last_run_status": RunStatus.FAILED,
        "next_sync_at": ch.now + ch.policy.retry_delay(failures),
    }
    problem = ch.add(
        event_type,
        fields,
        actor=actor,
        reason=reason,
        system=actor == SYSTEM_ACTOR,
        run_id=str(sync.current_sync_run_id),
        error=last_error,
        **extra,
    )
    if problem or dest is not S.SUSPENDED:
        return problem
    suspend_reason = f"auto-suspended after {failures} consecutive failures: {last_error}"
    return ch.add(
        EventType.STATUS_CHANGED,
        {
            **_status_fields(S.SUSPENDED),
            "pause_reason": suspend_reason[:MAX_LAST_ERROR],
            "paused_at": ch.now,
            "paused_by_user_id": SYSTEM_ACTOR,
        },
        actor=SYSTEM_ACTOR,
        reason=suspend_reason[:MAX_LAST_ERROR],
        trigger="auto_suspend",
        system=True,
    )


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

    dest = _fire(sync, command.type.value, policy)
    if dest is None:
        allowed = allowed_commands(sync.status, locked=sync.lock_token is not None)
        return _reject(
            ErrorCode.INVALID_TRANSITION,
            f"{command.type.value} is not allowed from status {sync.status.value}",
            sync,
            {"current_status": sync.status.value, "allowed_commands": allowed},
        )
    if (command.type.value, sync.status) in _NOOPS:
        return Decision(outcome=Outcome.NOOP, sync=sync)

    return _apply(_Changes(sync, command, now, policy), sync, command, data, dest)


def _apply(
    ch: _Changes, sync: SyncConfiguration, command: Command, data: Any, dest: SyncStatus
) -> Decision:
    now = ch.now
    problem: CommandError | None = None
    run: dict[str, Any] | None = None
    match data:
        case PauseData():
            problem = ch.add(
                EventType.UPDATED,
                {
                    **_status_fields(dest),
                    # Always set while paused, so a list of paused syncs says why.
                    "pause_reason": data.reason or f"paused by {data.paused_by_user_id}",
                    "paused_at": now,
                    "paused_by_user_id": data.paused_by_user_id,
                },
                actor=_actor(command, data.paused_by_user_id),
                reason=data.reason,
            )
        case ResumeData():
            actor = _actor(command, data.resumed_by_user_id)
            problem = ch.add(
                EventType.UPDATED,
                {**_status_fields(dest), **_PAUSE_CLEARED, "consecutive_failures": 0},
                actor=actor,
            )
            due = ch.sync.next_sync_at is None or ch.sync.next_sync_at <= now
            if problem is None and due and ch.sync.lock_token is None:
                ch.request_run(actor)
        case ActivateData():
            problem = ch.add(
                EventType.UPDATED,
                {**_status_fields(dest), "next_sync_at": now},
                actor=_actor(command, data.activated_by_user_id),
            )
        case CancelData() | ArchiveData():
            user = (
                data.canceled_by_user_id
                if isinstance(data, CancelData)
                else data.archived_by_user_id
            )
            fields: dict[str, Any] = {
                **_status_fields(dest),
                **_PAUSE_CLEARED,
                "next_sync_at": None,
            }
            if isinstance(data, ArchiveData):
                fields.update(_LOCK_RELEASED)  # an archived sync has no run to report on
            problem = ch.add(
                EventType.UPDATED, fields, actor=_actor(command, user), reason=data.reason
            )
        case UpdateData():
            problem = ch.add(
                EventType.UPDATED,
                data.model_dump(exclude_unset=True, exclude={"updated_by_user_id"}),
                actor=_actor(command, data.updated_by_user_id),
            )
            if problem is None:
                sized = _within_size(ch.sync)
                problem = sized if isinstance(sized, CommandError) else None
        case TriggerData():
            if sync.lock_token is not None:
                return Decision(outcome=Outcome.NOOP, sync=sync, run=_run_info(sync))
            ch.request_run(_actor(command, data.requested_by_user_id))
        case SystemData() if command.type is T.REQUEST_RUN:
            if sync.lock_token is not None or (
                sync.next_sync_at is None or sync.next_sync_at > now
            ):
                return Decision(outcome=Outcome.NOOP, sync=sync)
            ch.request_run(SYSTEM_ACTOR, trigger="schedule")
        case SystemData() if command.type is T.LOCK_EXPIRED:
            if sync.lock_expires_at is None or sync.lock_expires_at > now:
                return Decision(outcome=Outcome.NOOP, sync=sync)
            problem = _failure(
                ch,
                dest,
                f"the lease of worker {sync.locked_by_worker_id} expired",
                EventType.LOCK_EXPIRED,
                SYSTEM_ACTOR,
                "lease expired",
                worker_id=sync.locked_by_worker_id,
            )
        case RunStartData():
            if sync.lock_token is not None:
                # Held, or expired and not yet taken back: the scheduler is the one place a
                # lease expires (and counts as a failed run); the worker retries after it.
                expired = sync.lock_expires_at is not None and sync.lock_expires_at <= now
                return _reject(
                    ErrorCode.LOCK_CONFLICT,
                    f"the run lock is held by worker {sync.locked_by_worker_id}"
                    + ("; its lease expired and is being taken back" if expired else ""),
                    sync,
                    {
                        "locked_by_worker_id": sync.locked_by_worker_id,
                        "lock_expires_at": (
                            sync.lock_expires_at.isoformat() if sync.lock_expires_at else None
                        ),
                        "lease_expired": expired,
                    },
                )
            actor = f"worker:{data.worker_id}"
            if problem is None:
                counter = ch.sync.sync_run_counter + 1
                run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"synclife:{command.command_id}")
                fresh = (
                    {}
                    if ch.sync.resume_enabled
                    else {"resume_cursor": None, "resume_last_primary_key": None}
                )
                problem = ch.add(
                    EventType.RUN_STARTED,
                    {
                        **_status_fields(dest),
                        **fresh,
                        "locked_by_worker_id": data.worker_id,
                        "locked_at": now,
                        "lock_expires_at": now + timedelta(seconds=data.lease_seconds),
                        "lock_token": counter,
                        "current_sync_run_id": run_id,
                        "sync_run_counter": counter,
                        "current_run": RunMetrics(),
                        "last_run_status": RunStatus.IN_PROGRESS,
                        "next_sync_at": None,
                    },
                    actor=actor,
                    run_id=str(run_id),
                    worker_id=data.worker_id,
                    lock_token=counter,
                    modified_since=ch.sync.last_sync_at,
                    checkpoint=_checkpoint(ch.sync),
                )
        case RunHeartbeatData():
            if (stale := _lock_check(sync, data)) is not None:
                return stale
            problem = ch.add(
                EventType.LEASE_EXTENDED,
                {"lock_expires_at": now + timedelta(seconds=data.lease_seconds)},
                actor=f"worker:{sync.locked_by_worker_id}",
                run_id=str(data.run_id),
            )
        case RunCheckpointData():
            if (stale := _lock_check(sync, data)) is not None:
                return stale
            deltas = RunMetrics(
                files_discovered=data.files_discovered,
                files_synced=data.files_synced,
                files_failed=data.files_failed,
                bytes_synced=data.bytes_synced,
            )
            fields = _add_metrics(sync, deltas)
            for name in ("resume_cursor", "resume_last_primary_key", "resume_objects_processed"):
                if name in data.model_fields_set:
                    fields[name] = getattr(data, name)
            problem = ch.add(
                EventType.RUN_CHECKPOINTED,
                fields,
                actor=f"worker:{sync.locked_by_worker_id}",
                run_id=str(data.run_id),
            )
        case RunCompleteData():
            if (stale := _lock_check(sync, data)) is not None:
                return stale
            run_totals = RunMetrics(
                files_discovered=data.files_discovered,
                files_synced=data.files_synced,
                files_failed=data.files_failed,
                bytes_synced=data.bytes_synced,
            )
            # Checkpoints already added their deltas: add only what they did not report.
            seen = sync.current_run
            deltas = RunMetrics(
                **{
                    name: max(0, getattr(run_totals, name) - getattr(seen, name))
                    for name in RunMetrics.model_fields
                }
            )
            fields = _add_metrics(sync, deltas)
            new_batches = [b for b in data.batch_ids if b not in sync.batch_ids]
            fields.update(
                **_LOCK_RELEASED,
                **_status_fields(dest),
                batch_ids=[*sync.batch_ids, *new_batches][-MAX_TRACKED_IDS:],
                task_ids=[
                    *sync.task_ids,
                    *(t for t in data.task_ids if t not in sync.task_ids),
                ][-MAX_TRACKED_IDS:],
                batches_created=sync.batches_created + len(new_batches),
                # Incremental runs list files modified since this run *started*.
                last_sync_at=sync.locked_at,
                consecutive_failures=0,
                last_error=None,
                last_run_status=(
                    RunStatus.COMPLETED_WITH_ERRORS
                    if run_totals.files_failed
                    else RunStatus.COMPLETED
                ),
                resume_cursor=None,
                resume_last_primary_key=None,
                resume_objects_processed=(
                    data.objects_processed
                    if data.objects_processed is not None
                    else sync.resume_objects_processed
                ),
                next_sync_at=(
                    None
                    if dest is S.COMPLETED
                    else now + timedelta(seconds=sync.polling_interval_seconds)
                ),
            )
            if dest is S.COMPLETED:
                fields.update(_PAUSE_CLEARED)
            problem = ch.add(
                EventType.RUN_COMPLETED,
                fields,
                actor=f"worker:{sync.locked_by_worker_id}",
                run_id=str(data.run_id),
                run_totals=run_totals.model_dump(),
            )
        case RunFailData():
            if (stale := _lock_check(sync, data)) is not None:
                return stale
            problem = _failure(
                ch,
                dest,
                data.error,
                EventType.RUN_FAILED,
                f"worker:{sync.locked_by_worker_id}",
                None,
            )
        case _:  # pragma: no cover - parse_data only builds the types above
            raise TypeError(f"no effect defined for {command.type.value}")

    if problem is not None:
        return Decision(outcome=Outcome.REJECTED, sync=sync, error=problem)
    final = ch.sync
    if isinstance(data, RunStartData | RunHeartbeatData | RunCheckpointData):
        run = _run_info(final)
    return Decision(outcome=Outcome.APPLIED, sync=sync, changes=tuple(ch.items), run=run)


def _add_metrics(sync: SyncConfiguration, deltas: RunMetrics) -> dict[str, Any]:
    run = sync.current_run
    return {
        "total_files_discovered": sync.total_files_discovered + deltas.files_discovered,
        "total_files_synced": sync.total_files_synced + deltas.files_synced,
        "total_files_failed": sync.total_files_failed + deltas.files_failed,
        "total_bytes_synced": sync.total_bytes_synced + deltas.bytes_synced,
        "current_run": RunMetrics(
            files_discovered=run.files_discovered + deltas.files_discovered,
            files_synced=run.files_synced + deltas.files_synced,
            files_failed=run.files_failed + deltas.files_failed,
            bytes_synced=run.bytes_synced + deltas.bytes_synced,
        ),
    }
