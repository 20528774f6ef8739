"""What a batch writes, serialized: the ids of its messages, its outbox and result rows, each
sync's timer, and the JSON of its events and results (each sync version serialized once)."""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import pydantic_core
from pydantic import BaseModel

from events.envelope import rfc3339
from events.messages import RESULT_TYPE, CommandResult, LifecycleEvent
from events.service.packed_headers import pack_ce_headers, pack_headers
from events.service.settings import Settings
from statemachine import Change, Decision, SyncConfiguration, SyncStatus
from statemachine.decision import JobEffect, JobPhase

#: The fields of a ``LifecycleEvent`` that only some event types carry (left out elsewhere).
EXTRAS: Final = frozenset(
    {
        "modified_since",
        "checkpoint",
        "run_id",
        "worker_id",
        "lock_token",
        "error",
        "run_totals",
        "sync_job_id",
        "full_sync",
        "runs_skipped_while_paused",
    }
)


@dataclass
class Writes:
    """Everything one batch writes, gathered for its one statement."""

    inserts: dict[str, SyncConfiguration] = field(default_factory=dict)
    updates: dict[str, tuple[int, SyncConfiguration]] = field(default_factory=dict)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    #: (command id, type, sync id, key id, outcome, result JSON as bytes or text, time).
    processed: list[tuple[Any, ...]] = field(default_factory=list)
    #: (topic, key bytes, value bytes, packed headers text) each (``outbox_row``).
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    keys_used: set[str] = field(default_factory=set)
    #: The keys the batch authenticated commands with: the write is fenced on them still
    #: being unrevoked.
    live_keys: set[str] = field(default_factory=set)
    #: sync id -> its new ``sync_timers.due_at``, for the syncs whose timer moved.
    timers: dict[str, datetime | None] = field(default_factory=dict)
    #: The JSON of each written sync's latest version (its ``data`` column).
    sync_json: dict[str, str] = field(default_factory=dict)
    #: job id -> its ``sync_jobs`` row after the batch (``JOB_COLUMNS``), every effect of the
    #: batch on it merged: one row per job, as one statement may change a row only once.
    jobs: dict[str, list[Any]] = field(default_factory=dict)
    #: Accepted bulk commands (``BULK_REQUEST_COLUMNS`` of events/service/bulk/requests.py),
    #: recorded for the bulk worker, which answers them.
    bulk_requests: list[tuple[Any, ...]] = field(default_factory=list)

    def job(self, sync: SyncConfiguration, effect: JobEffect) -> None:
        """Merge ``effect`` (declared by a change of ``sync``, at its ``updated_at``) into
        the job's row. A finished job is final: later effects on it are ignored (here, and
        in the database for a job finished by an earlier batch)."""
        at = sync.updated_at
        row = [
            effect.sync_job_id,
            sync.sync_config_id,
            sync.internal_id,
            sync.namespace_id,
            effect.trigger.value if effect.trigger is not None else None,
            effect.status.value,
            effect.phase.value if effect.phase is not None else None,
            effect.full_sync,
            effect.files_synced,
            effect.files_failed,
            effect.error,
            effect.current_cursor,
            at,
            effect.started_at,
            effect.completed_at,
            at,
        ]
        before = self.jobs.get(effect.sync_job_id)
        if before is not None:
            if before[6] is None:  # finished earlier in this batch
                return
            if effect.phase is not JobPhase.QUEUED:  # requested again: the newest trigger
                row[4] = before[4] or row[4]  # else the one it was requested with
            row[7] = before[7] or row[7]  # once full, full
            row[12] = before[12]  # created_at
            row[13] = row[13] or before[13]  # started_at
        self.jobs[effect.sync_job_id] = row


def result_id(command_id: str) -> str:
    """The result's event id is fixed by its command id: resending it is a duplicate."""
    return f"result:{command_id}"


def event_id(sync_config_id: str, version: int) -> str:
    """One event per version: the id is fixed by the sync and version."""
    return f"{sync_config_id}:v{version}"


_SCHEDULED: Final = frozenset({SyncStatus.PENDING, SyncStatus.ACTIVE})
#: Commands whose result names the holds left (``holds``).
_HOLD_COMMANDS: Final = frozenset({"sync.pause", "sync.resume"})


def timer_of(sync: SyncConfiguration) -> datetime | None:
    """When the scheduler must next look at ``sync`` (its ``sync_timers.due_at``): the
    earliest of its holds' ``until`` (a timed pause ends) and when its run's lease expires
    while a run holds one, else its next poll while it is PENDING or ACTIVE; else never."""
    due = sync.lock_expires_at
    if due is None and sync.status in _SCHEDULED:
        due = sync.next_sync_at
    for hold in sync.pause_holds:
        if hold.until is not None and (due is None or hold.until < due):
            due = hold.until
    return due


def outbox_row(
    topic: str,
    key: str | bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | str,
) -> tuple[Any, ...]:
    """An outbox row; ``headers`` as a list, or already packed (``packed_ce_headers``)."""
    raw_key = key.encode() if isinstance(key, str) else key
    packed = headers if isinstance(headers, str) else pack_headers(headers)
    return (topic, raw_key, value, packed)


@lru_cache(maxsize=256)
def _moment_text(moment: datetime, offset: timedelta | None) -> str:
    # Keyed by the offset too: equal instants at different offsets are written differently.
    return rfc3339(moment)


def packed_ce_headers(event_id: str, event_type: str, subject: str, time: datetime) -> str:
    """``pack_ce_headers`` of a message synclife writes, a batch's time written once."""
    text = _moment_text(time, time.utcoffset())
    return pack_ce_headers(event_id=event_id, event_type=event_type, subject=subject, time=text)


def result_row(
    settings: Settings, result: bytes, command_id: str, key: str, at: datetime
) -> tuple[Any, ...]:
    headers = packed_ce_headers(result_id(command_id), RESULT_TYPE, key, at)
    return outbox_row(settings.results_topic, key, result, headers)


def _around_sync(model: type[BaseModel]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The model's fields before ``sync`` (all scalars) and after it, in order."""
    names = list(model.model_fields)
    at = names.index("sync")
    return tuple(names[:at]), tuple(names[at + 1 :])


EVENT_PARTS: Final = _around_sync(LifecycleEvent)
RESULT_PARTS: Final = _around_sync(CommandResult)


def dump_with_sync(
    model: BaseModel,
    parts: tuple[tuple[str, ...], tuple[str, ...]],
    sync_json: str,
    exclude: AbstractSet[str] = frozenset(),
) -> bytes:
    """``model.model_dump_json(exclude=exclude)``, with its ``sync`` given already serialized.

    A sync is serialized once per version and reused in its event, its result and its row:
    the model is dumped without it and the sync's JSON put back before the field that follows
    it (found by its key: the fields before ``sync`` are scalars, whose strings escape every
    quote). The bytes are those of a whole dump (a unit test holds them equal).
    """
    text = model.model_dump_json(exclude={"sync", *exclude})
    following = next((name for name in parts[1] if name not in exclude), None)
    at = text.find(f',"{following}":') if following is not None else len(text) - 1
    if at <= 0:
        return model.model_dump_json(exclude=set(exclude)).encode()
    return (text[:at] + ',"sync":' + sync_json + text[at:]).encode()


#: The event fields after ``sync`` that only some event types carry, in the model's order.
_EXTRA_ORDER: Final = tuple(n for n in EVENT_PARTS[1] if n in EXTRAS)
_to_json = pydantic_core.to_json

#: Tests set this: every event and result serialized from its parts is compared with the
#: model's own dump (``LifecycleEvent``, ``CommandResult``), byte for byte.
VERIFY_DUMPS = False


def event_json(change: Change, command_id: str | None, sync_json: str) -> bytes:
    """The JSON of the ``LifecycleEvent`` of ``change`` (``dump_with_sync(event, EVENT_PARTS,
    sync_json, EXTRAS - change.extra.keys())``), serialized from its parts without building
    and validating the model: every part is the machine's own, already validated (about 4 us
    instead of 8; tests compare the two)."""
    sync = change.sync
    head = _to_json(
        {
            "sync_config_id": sync.sync_config_id,
            "bucket_id": sync.bucket_id,
            "namespace_id": sync.namespace_id,
            "internal_id": sync.internal_id,
            "version": sync.version,
            "occurred_at": sync.updated_at,
            "command_id": command_id,
            "actor": change.actor,
            "reason": change.reason,
            "trigger": change.trigger,
        }
    )
    before, after = change.from_status, change.to_status
    tail: dict[str, Any] = {
        "from_status": before._value_ if before is not None else None,
        "to_status": after._value_ if after is not None else None,
    }
    extra = change.extra
    if extra:
        tail.update((name, extra[name]) for name in _EXTRA_ORDER if name in extra)
    text = b"".join((head[:-1], b',"sync":', sync_json.encode(), b",", _to_json(tail)[1:]))
    if VERIFY_DUMPS:
        _verify(text, _event_model(change, command_id), EVENT_PARTS, sync_json, extra.keys())
    return text


def _event_model(change: Change, command_id: str | None) -> LifecycleEvent:
    sync = change.sync
    return LifecycleEvent(
        sync_config_id=sync.sync_config_id,
        bucket_id=sync.bucket_id,
        namespace_id=sync.namespace_id,
        internal_id=sync.internal_id,
        version=sync.version,
        occurred_at=sync.updated_at,
        command_id=command_id,
        actor=change.actor,
        reason=change.reason,
        trigger=change.trigger,
        sync=sync,
        from_status=change.from_status,
        to_status=change.to_status,
        **change.extra,
    )


def _verify(
    text: bytes,
    model: BaseModel,
    parts: tuple[tuple[str, ...], tuple[str, ...]],
    sync_json: str,
    given: AbstractSet[str],
) -> None:
    expected = dump_with_sync(model, parts, sync_json, EXTRAS - given)
    if text != expected:
        raise AssertionError(f"serialized from parts:\n{text!r}\nthe model's dump:\n{expected!r}")


def applied_result_json(
    command_id: str,
    command_type: str,
    sync_config_id: str,
    decision: Decision,
    final: SyncConfiguration,
    sync_json: str,
) -> bytes:
    """The JSON of ``command_result(...)`` of an applied or noop ``decision`` whose sync the
    caller may see (``final``, serialized as ``sync_json``), from its parts, as
    ``event_json`` does for events (tests compare it with the model's dump)."""
    head = _to_json(
        {
            "command_id": command_id,
            "command_type": command_type,
            "sync_config_id": sync_config_id,
            "outcome": decision.outcome._value_,
            "version": final.version,
            "status": final.status._value_,
        }
    )
    tail = _to_json(
        {
            "error": None,
            "events": [event_id(c.sync.sync_config_id, c.sync.version) for c in decision.changes],
            "run": decision.run,
            "sync_job_id": decision.sync_job_id,
            "holds": (
                [h.hold for h in final.pause_holds] if command_type in _HOLD_COMMANDS else None
            ),
            "operation_id": None,
            "counts": None,
        }
    )
    text = b"".join((head[:-1], b',"sync":', sync_json.encode(), b",", tail[1:]))
    if VERIFY_DUMPS:
        model = command_result(command_id, command_type, sync_config_id, decision, final)
        _verify(text, model, RESULT_PARTS, sync_json, EXTRAS)
    return text


def command_result(
    command_id: str,
    command_type: str,
    sync_config_id: str,
    decision: Decision,
    final: SyncConfiguration | None,
) -> CommandResult:
    """The result of a decided command; ``final`` is the sync if the caller may see it."""
    return CommandResult(
        command_id=command_id,
        command_type=command_type,
        sync_config_id=sync_config_id,
        outcome=decision.outcome,
        version=final.version if final else None,
        status=final.status if final else None,
        sync=final,
        error=decision.error,
        events=[event_id(c.sync.sync_config_id, c.sync.version) for c in decision.changes],
        run=decision.run if final is not None else None,
        sync_job_id=decision.sync_job_id if final is not None else None,
        holds=(
            [h.hold for h in final.pause_holds]
            if final is not None and command_type in _HOLD_COMMANDS
            else None
        ),
    )
