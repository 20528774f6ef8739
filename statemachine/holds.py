"""Pause holds (wire contract v1.1): who may place and release which hold, timed pauses, and
what a pause, a resume and an expiry do.

A sync is SUSPENDED while it has a hold. Labels: ``user:<caller>`` (a **plain** hold: a pause
without ``hold``), ``system:failures`` (the auto-suspension), ``bulk:<operation id>`` (a bulk
pause), any other text (a **named** hold, e.g. ``maintenance:INC-42``). Labels starting
``system:`` or ``bulk:`` are the service's own: a client's pause may not place one; a
``Command`` with ``system_labels_allowed`` (built by the service, e.g. a bulk operation) or
without a command id (a system change) may.

Releasing: a plain resume releases every plain hold and ``system:failures``; a resume naming a
hold releases that one (a named hold whose ``paused_by_user_id`` is not the caller's needs
``Command.admin``; a ``system:`` or ``bulk:`` hold named by a command with
``system_labels_allowed`` does not); ``force`` releases all (``Command.admin`` only: never
granted by ``system_labels_allowed``); a hold whose ``until`` passed is released by the
scheduler (``SystemTrigger.PAUSE_EXPIRED``).

For a bulk operation (one ``Command`` per matched sync, ``system_labels_allowed=True``,
``actor="bulk:<operation id>"``, ``caller`` the operation's caller, ``admin`` the key's):
``PauseData(hold=bulk_label(op), reason=..., until=...)`` places its hold,
``ResumeData(hold=bulk_label(op))`` (its undo) releases exactly that hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from statemachine.changes import SYSTEM_ACTOR, Changes, actor, status_fields, user_of
from statemachine.commands import Command, PauseData, ResumeData
from statemachine.decision import EventType, JobTrigger
from statemachine.durations import parse_until
from statemachine.errors import CommandError, ErrorCode, bounded
from statemachine.jobs import request_run
from statemachine.model import MAX_LAST_ERROR, PauseHold, SyncConfiguration, SyncMode
from statemachine.status import SyncStatus

__all__ = [
    "BULK_PREFIX",
    "FAILURES_HOLD",
    "MAX_PAUSE",
    "PLAIN_PREFIX",
    "SYSTEM_PREFIX",
    "Release",
    "bulk_label",
    "expire",
    "expired",
    "hold_fields",
    "is_plain",
    "is_service_label",
    "pause",
    "plain_label",
    "released",
    "resume",
    "runs_skipped",
    "until_at",
]

S = SyncStatus
PLAIN_PREFIX: Final = "user:"
SYSTEM_PREFIX: Final = "system:"
BULK_PREFIX: Final = "bulk:"
FAILURES_HOLD: Final = "system:failures"
#: The longest timed pause (``until`` at most this far after the decision).
MAX_PAUSE: Final = timedelta(days=90)


def plain_label(user: str) -> str:
    """The plain hold of ``user`` (a pause without ``hold``)."""
    return f"{PLAIN_PREFIX}{user}"


def bulk_label(operation_id: str) -> str:
    """The hold a bulk pause ``operation_id`` places on each sync it pauses."""
    return f"{BULK_PREFIX}{operation_id}"


def is_plain(label: str) -> bool:
    return label.startswith(PLAIN_PREFIX)


def is_service_label(label: str) -> bool:
    """``system:`` and ``bulk:`` labels (any case) belong to the service."""
    return label.lower().startswith((SYSTEM_PREFIX, BULK_PREFIX))


def _plainly_released(label: str) -> bool:
    return is_plain(label) or label == FAILURES_HOLD


def _reason_of(hold: PauseHold) -> str:
    return (hold.reason or f"paused by {hold.paused_by_user_id}")[:MAX_LAST_ERROR]


def hold_fields(holds: Sequence[PauseHold]) -> dict[str, Any]:
    """``pause_holds`` and the seed's pause fields, which describe the earliest hold (the
    first of those placed earliest); all cleared without holds. The status is not included."""
    if not holds:
        return {
            "pause_holds": [],
            "pause_reason": None,
            "paused_at": None,
            "paused_by_user_id": None,
        }
    earliest = min(holds, key=lambda h: h.paused_at)
    return {
        "pause_holds": list(holds),
        "pause_reason": _reason_of(earliest),
        "paused_at": earliest.paused_at,
        "paused_by_user_id": earliest.paused_by_user_id,
    }


def _invalid(field: str, problem: str) -> CommandError:
    return CommandError(
        code=ErrorCode.VALIDATION_ERROR,
        message=f"{field}: {problem}",
        details={"errors": [{"field": field, "problem": problem}]},
    )


def until_at(text: str, now: datetime) -> datetime | CommandError:
    """``until`` as an absolute UTC time: a time as given, a duration from ``now``; it must be
    in the future and at most ``MAX_PAUSE`` away."""
    parsed = parse_until(text)
    if parsed is None:  # parse_data checked the syntax
        return _invalid("until", "not an RFC 3339 time nor an ISO 8601 duration")
    at = now + parsed if isinstance(parsed, timedelta) else parsed.astimezone(UTC)
    if at <= now:
        return _invalid("until", "must be in the future")
    if at - now > MAX_PAUSE:
        return _invalid("until", f"must be at most {MAX_PAUSE.days} days away")
    return at


def _service(command: Command) -> bool:
    return command.command_id is None or command.system_labels_allowed


def placed(
    sync: SyncConfiguration, command: Command, data: PauseData, now: datetime
) -> list[PauseHold] | CommandError:
    """The holds after ``data``'s pause: its hold added, or (already held) the fields given
    replaced and those omitted kept."""
    by = user_of(command, data.paused_by_user_id, "paused_by_user_id")
    if isinstance(by, CommandError):
        return by
    label = data.hold or plain_label(by)
    if data.hold is not None and is_service_label(data.hold) and not _service(command):
        return _invalid("hold", "labels starting system: or bulk: are the service's own")
    until = None if data.until is None else until_at(data.until, now)
    if isinstance(until, CommandError):
        return until
    holds = list(sync.pause_holds)
    for i, held in enumerate(holds):
        if held.hold == label:
            given: dict[str, Any] = {}
            if data.reason is not None:
                given["reason"] = data.reason
            if until is not None:
                given["until"] = until
            if data.paused_by_user_id is not None:
                given["paused_by_user_id"] = data.paused_by_user_id
            holds[i] = held.model_copy(update=given)
            return holds
    holds.append(
        PauseHold(hold=label, reason=data.reason, paused_at=now, paused_by_user_id=by, until=until)
    )
    return holds


@dataclass(frozen=True, slots=True)
class Release:
    """What a resume or an expiry does to the holds: those kept and those released."""

    kept: tuple[PauseHold, ...]
    released: tuple[PauseHold, ...]


def _split(sync: SyncConfiguration, going: Any) -> Release:
    kept = tuple(h for h in sync.pause_holds if not going(h))
    return Release(kept, tuple(h for h in sync.pause_holds if going(h)))


def released(sync: SyncConfiguration, command: Command, data: ResumeData) -> Release | CommandError:
    """Which holds a resume releases, or ``forbidden`` when it may not."""
    if data.force:
        if not (command.admin or command.command_id is None):
            return CommandError(
                code=ErrorCode.FORBIDDEN,
                message="force needs the scope syncs:admin",
                details={"required_scope": "syncs:admin"},
            )
        return _split(sync, lambda h: True)
    if data.hold is None:
        return _split(sync, lambda h: _plainly_released(h.hold))
    named = next((h for h in sync.pause_holds if h.hold == data.hold), None)
    if named is not None and not _plainly_released(named.hold):
        # The caller, as for a pause: the data's user if given, else the key's (changes.user_of).
        who = data.resumed_by_user_id or command.caller
        own = named.paused_by_user_id == who or command.command_id is None
        service = command.system_labels_allowed and is_service_label(named.hold)
        if not (own or service or command.admin):
            return CommandError(
                code=ErrorCode.FORBIDDEN,
                message=f"the hold {bounded(named.hold)} is another owner's: releasing it "
                "needs the scope syncs:admin",
                details={"hold": bounded(named.hold), "required_scope": "syncs:admin"},
            )
    return _split(sync, lambda h: h.hold == data.hold)


def expired(sync: SyncConfiguration, now: datetime) -> Release:
    """The holds whose ``until`` has passed at ``now`` are released."""
    return _split(sync, lambda h: h.until is not None and h.until <= now)


def runs_skipped(sync: SyncConfiguration, now: datetime) -> int:
    """How many times ``sync`` fell due while paused until ``now``: 0 if never, else 1 + the
    whole intervals between its first due time while paused and ``now`` (an initial_only
    sync runs once: at most 1)."""
    if sync.next_sync_at is None or sync.paused_at is None:
        return 0
    first = max(sync.next_sync_at, sync.paused_at)
    if first > now:
        return 0
    if sync.sync_mode is SyncMode.INITIAL_ONLY:
        return 1
    return 1 + int((now - first).total_seconds() // sync.polling_interval_seconds)


def pause(ch: Changes, command: Command, data: PauseData, dest: SyncStatus) -> CommandError | None:
    """A pause (``sync.pause``, or an update's ``is_active`` false): its hold placed or
    changed; nothing changed: no change (the caller answers ``noop``)."""
    holds = placed(ch.sync, command, data, ch.now)
    if isinstance(holds, CommandError):
        return holds
    if holds == ch.sync.pause_holds:
        return None
    return ch.add(
        EventType.HOLDS_CHANGED,
        {**status_fields(dest), **hold_fields(holds)},
        actor=actor(command, data.paused_by_user_id),
        reason=data.reason,
    )


def resume(
    ch: Changes,
    command: Command,
    data: ResumeData,
    plan: Release,
    dest: SyncStatus,
    *,
    by: str | None = None,
    trigger: str | None = None,
    reason: str | None = None,
) -> CommandError | None:
    """Release ``plan.released``. Holds left: one change (``sync.holds_changed``), still
    SUSPENDED. None left: ACTIVE (``dest``) with ``runs_skipped_while_paused``, then ``mode``
    and ``run`` say when the next run is and whether it is full. Nothing released: no change."""
    if not plan.released:
        return None
    sync, now = ch.sync, ch.now
    by = by or actor(command, data.resumed_by_user_id)
    fields: dict[str, Any] = hold_fields(plan.kept)
    if any(h.hold == FAILURES_HOLD for h in plan.released) or not plan.kept:
        fields["consecutive_failures"] = 0
    if plan.kept:
        return ch.add(
            EventType.HOLDS_CHANGED,
            fields,
            actor=by,
            trigger=trigger,
            reason=reason,
            system=by == SYSTEM_ACTOR,
        )
    skipped = runs_skipped(sync, now)
    fields.update(status_fields(dest))
    full = data.mode == "full"
    due = sync.next_sync_at is None or sync.next_sync_at <= now
    if data.run == "next_interval":
        fields["next_sync_at"] = now + timedelta(seconds=sync.polling_interval_seconds)
        due = False
    request = due and sync.lock_token is None
    if full and not request:
        fields["pending_full_sync"] = True  # the next run (after the lock, or when due) is full
    problem = ch.add(
        EventType.UPDATED,
        fields,
        actor=by,
        trigger=trigger,
        reason=reason,
        system=by == SYSTEM_ACTOR,
        runs_skipped_while_paused=skipped,
    )
    if problem is None and request:
        problem = request_run(ch, by, JobTrigger.RESUME, full=full)
    return problem


#: The resume an expiry makes: the defaults (incremental, a run at once if one fell due).
_EXPIRY: Final = ResumeData()


def expire(ch: Changes, command: Command, dest: SyncStatus) -> CommandError | None:
    """The scheduler's release of the holds whose ``until`` passed (actor ``system``,
    trigger ``pause_expired``), as one versioned change."""
    plan = expired(ch.sync, ch.now)
    labels = ", ".join(h.hold for h in plan.released)
    return resume(
        ch,
        command,
        _EXPIRY,
        plan,
        dest,
        by=SYSTEM_ACTOR,
        trigger="pause_expired",
        reason=f"pause expired: {labels}"[:MAX_LAST_ERROR],
    )
