"""Pause holds, timed pauses and resume modes (wire contract v1.1), rule by rule through
``decide``; the durations of ``until``; the timer and the result's ``holds``."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.service.processor.rows import command_result, timer_of
from statemachine.commands import Command, CommandType, SystemTrigger, parse_data
from statemachine.decider import decide
from statemachine.decision import Decision, EventType, Outcome
from statemachine.durations import (
    friendly_duration,
    iso_duration,
    parse_duration,
    parse_time,
    until_text,
)
from statemachine.errors import CommandError, ErrorCode
from statemachine.holds import FAILURES_HOLD, bulk_label
from statemachine.model import MAX_HOLDS, SyncConfiguration
from statemachine.runs import system_command
from statemachine.status import SyncStatus
from tests.helpers.syncs import SYNC_ID, T1, make_command, make_sync

S = SyncStatus
C = CommandType
NOW = T1


def command(
    kind: CommandType, data: dict[str, Any] | None = None, caller: str = "user_bob", **extra: Any
) -> Command:
    """A command with a key's caller (and ``extra``: ``admin``, ``system_labels_allowed``...)."""
    return dataclasses.replace(make_command(kind, data or {}), caller=caller, **extra)


def active(**overrides: Any) -> SyncConfiguration:
    fields: dict[str, Any] = {"status": S.ACTIVE, "next_sync_at": NOW + timedelta(minutes=3)}
    return make_sync(**{**fields, **overrides})


def run(sync: SyncConfiguration, *commands: Command, at: datetime = NOW) -> SyncConfiguration:
    """Apply each command (each must not be rejected); the sync after the last."""
    for c in commands:
        decision = decide(sync, c, at)
        assert decision.outcome is not Outcome.REJECTED, decision.error
        assert decision.final is not None
        sync = decision.final
    return sync


def labels(sync: SyncConfiguration) -> list[str]:
    return [h.hold for h in sync.pause_holds]


def rejected(decision: Decision, code: ErrorCode, field: str | None = None) -> None:
    assert decision.outcome is Outcome.REJECTED and decision.changes == ()
    assert decision.error is not None and decision.error.code is code, decision.error
    if field is not None:
        assert [e["field"] for e in decision.error.details["errors"]] == [field]


# --- placing holds --------------------------------------------------------------------------


def test_a_plain_pause_is_the_callers_hold_and_the_seed_fields_describe_it() -> None:
    sync = run(active(), command(C.PAUSE, {"reason": "audit"}))
    assert sync.status is S.SUSPENDED and labels(sync) == ["user:user_bob"]
    assert (sync.pause_reason, sync.paused_by_user_id, sync.paused_at) == ("audit", "user_bob", NOW)
    without_reason = run(active(), command(C.PAUSE, caller="key:key_1"))
    assert labels(without_reason) == ["user:key:key_1"]
    assert without_reason.pause_reason == "paused by key:key_1"


def test_two_holders_a_users_resume_leaves_the_maintenance_hold() -> None:
    maintenance = command(C.PAUSE, {"hold": "maintenance:INC-42", "reason": "db"}, caller="ops")
    sync = run(active(), maintenance)
    later = NOW + timedelta(minutes=1)
    decision = decide(sync, command(C.PAUSE, {"reason": "mine"}), later)
    assert decision.outcome is Outcome.APPLIED
    (change,) = decision.changes
    assert change.event_type is EventType.HOLDS_CHANGED and change.to_status is S.SUSPENDED
    sync = change.sync
    assert labels(sync) == ["maintenance:INC-42", "user:user_bob"]
    assert (sync.pause_reason, sync.paused_by_user_id) == ("db", "ops")  # the earliest hold
    # The user's plain resume releases their own hold only: still SUSPENDED.
    decision = decide(sync, command(C.RESUME), later)
    assert decision.outcome is Outcome.APPLIED
    assert [c.event_type for c in decision.changes] == [EventType.HOLDS_CHANGED]
    sync = decision.changes[0].sync
    assert sync.status is S.SUSPENDED and labels(sync) == ["maintenance:INC-42"]
    # A plain resume again releases nothing: a noop.
    assert decide(sync, command(C.RESUME), later).outcome is Outcome.NOOP
    # The maintenance owner's release resumes it.
    decision = decide(sync, command(C.RESUME, {"hold": "maintenance:INC-42"}, "ops"), later)
    assert decision.final is not None and decision.final.status is S.ACTIVE
    assert decision.changes[0].event_type is EventType.STATUS_CHANGED
    assert decision.final.pause_holds == [] and decision.final.paused_at is None


def test_pausing_a_held_hold_replaces_the_fields_given_and_keeps_the_others() -> None:
    sync = run(active(), command(C.PAUSE, {"hold": "m:1", "reason": "first", "until": "PT2H"}))
    again = decide(sync, command(C.PAUSE, {"hold": "m:1"}), NOW)
    assert again.outcome is Outcome.NOOP and again.changes == ()
    changed = decide(sync, command(C.PAUSE, {"hold": "m:1", "reason": "second"}), NOW)
    assert changed.outcome is Outcome.APPLIED
    assert changed.final is not None
    (hold,) = changed.final.pause_holds
    assert (hold.reason, hold.until, hold.paused_at) == ("second", NOW + timedelta(hours=2), NOW)
    assert changed.changes[0].event_type is EventType.HOLDS_CHANGED


@pytest.mark.parametrize("label", ["system:failures", "bulk:op_1", "System:x", "BULK:y"])
def test_a_clients_pause_may_not_use_the_services_labels(label: str) -> None:
    rejected(decide(active(), command(C.PAUSE, {"hold": label}), NOW), ErrorCode.VALIDATION_ERROR)
    error = decide(active(), command(C.PAUSE, {"hold": label}), NOW).error
    assert error is not None and error.details["errors"][0]["field"] == "hold"


def test_a_bulk_operation_places_and_its_undo_releases_exactly_its_hold() -> None:
    op = "bulk_01J0000000000000000000000"
    bulk = {"system_labels_allowed": True, "actor": f"bulk:{op}"}
    manual = command(C.PAUSE, {"hold": "manual:1"}, caller="carol")
    sync = run(active(), manual)
    decision = decide(sync, command(C.PAUSE, {"hold": bulk_label(op)}, "alice", **bulk), NOW)
    assert decision.outcome is Outcome.APPLIED
    assert decision.changes[0].actor == f"bulk:{op}"
    sync = run(sync, command(C.PAUSE, {"hold": bulk_label(op)}, "alice", **bulk))
    assert labels(sync) == ["manual:1", f"bulk:{op}"]
    # The undo (another caller: the service's own command) releases that hold only.
    undo = command(C.RESUME, {"hold": bulk_label(op)}, "dave", **bulk)
    after = run(sync, undo)
    assert after.status is S.SUSPENDED and labels(after) == ["manual:1"]
    # The service's own command gets no force from it, nor another owner's named hold.
    forced = command(C.RESUME, {"force": True}, "dave", **bulk)
    rejected(decide(sync, forced, NOW), ErrorCode.FORBIDDEN)
    manual_release = command(C.RESUME, {"hold": "manual:1"}, "dave", **bulk)
    rejected(decide(sync, manual_release, NOW), ErrorCode.FORBIDDEN)
    assert labels(run(sync, dataclasses.replace(manual_release, admin=True))) == [f"bulk:{op}"]
    # A client naming the bulk hold of another owner needs admin.
    rejected(
        decide(sync, command(C.RESUME, {"hold": bulk_label(op)}, "dave"), NOW), ErrorCode.FORBIDDEN
    )


# --- releasing holds ------------------------------------------------------------------------


def test_another_owners_named_hold_needs_admin_and_force_releases_all() -> None:
    sync = run(
        active(),
        command(C.PAUSE, {"hold": "m:1"}, caller="ops"),
        command(C.PAUSE, {"hold": "m:2"}, caller="ops"),
    )
    rejected(decide(sync, command(C.RESUME, {"hold": "m:1"}), NOW), ErrorCode.FORBIDDEN)
    admin = run(sync, command(C.RESUME, {"hold": "m:1"}, admin=True))
    assert labels(admin) == ["m:2"]
    rejected(decide(sync, command(C.RESUME, {"force": True}), NOW), ErrorCode.FORBIDDEN)
    forced = decide(sync, command(C.RESUME, {"force": True}, admin=True), NOW)
    assert forced.final is not None and forced.final.status is S.ACTIVE
    # A hold nobody holds: nothing released.
    assert decide(sync, command(C.RESUME, {"hold": "m:9"}), NOW).outcome is Outcome.NOOP


def test_a_resume_takes_its_caller_from_resumed_by_user_id_as_a_pause_does_its_owner() -> None:
    # A key without a user: its caller is key:<key id>; the data's user is the caller.
    keyed = "key:key_1"
    pause = command(C.PAUSE, {"hold": "maintenance:X", "paused_by_user_id": "alice"}, caller=keyed)
    sync = run(active(), pause)
    assert sync.pause_holds[0].paused_by_user_id == "alice"
    mine = command(C.RESUME, {"hold": "maintenance:X", "resumed_by_user_id": "alice"}, keyed)
    decision = decide(sync, mine, NOW)
    assert decision.outcome is Outcome.APPLIED
    assert decision.final is not None and decision.final.status is S.ACTIVE
    # Another user's resume of it, without admin, is forbidden; the key alone is not alice.
    other = command(C.RESUME, {"hold": "maintenance:X", "resumed_by_user_id": "mallory"}, keyed)
    rejected(decide(sync, other, NOW), ErrorCode.FORBIDDEN)
    rejected(
        decide(sync, command(C.RESUME, {"hold": "maintenance:X"}, keyed), NOW), ErrorCode.FORBIDDEN
    )
    assert labels(run(sync, dataclasses.replace(other, admin=True))) == []


def test_a_resume_naming_a_hold_the_sync_does_not_hold_changes_nothing() -> None:
    failed = make_sync(status=S.FAILED, consecutive_failures=5)
    op = "bulk_01J0000000000000000000000"
    undo = command(
        C.RESUME, {"hold": bulk_label(op)}, system_labels_allowed=True, actor=f"bulk:{op}"
    )
    for named in (undo, command(C.RESUME, {"hold": "maintenance:X"})):
        decision = decide(failed, named, NOW)
        assert decision.outcome is Outcome.NOOP and decision.changes == ()
    # A plain resume still retries it.
    retried = decide(failed, command(C.RESUME), NOW)
    assert retried.final is not None and retried.final.status is S.PENDING
    active_sync = active()
    assert decide(active_sync, undo, NOW).outcome is Outcome.NOOP


def test_a_plain_resume_releases_the_auto_suspension_and_the_plain_holds() -> None:
    suspended = make_sync(
        status=S.SUSPENDED, paused_by_user_id="system", consecutive_failures=5, next_sync_at=NOW
    )
    assert labels(suspended) == [FAILURES_HOLD]  # an older document: its one hold
    sync = run(suspended, command(C.PAUSE, caller="alice"), command(C.PAUSE, {"hold": "m:1"}))
    after = run(sync, command(C.RESUME, caller="carol"))
    assert labels(after) == ["m:1"] and after.consecutive_failures == 0


# --- a run that fails while its sync is paused ----------------------------------------------

JOB = "job_01HZX3T5ZQ8Y4V9B2M6N7P0QRS"
TOKEN = 7


def paused_mid_run(failures: int, mode: str = "continuous") -> SyncConfiguration:
    """A sync whose run holds the lock, paused meanwhile by a named and a plain hold."""
    running = active(
        sync_mode=mode,
        lock_token=TOKEN,
        sync_run_counter=TOKEN,
        current_sync_run_id=JOB,
        locked_by_worker_id="w1",
        locked_at=NOW - timedelta(minutes=1),
        lock_expires_at=NOW + timedelta(minutes=5),
        consecutive_failures=failures,
    )
    return run(
        running,
        command(C.PAUSE, {"hold": "maintenance:INC-1", "reason": "maint"}),
        command(C.PAUSE, caller="alice"),
    )


def run_fails(sync: SyncConfiguration) -> Decision:
    report = make_command(C.RUN_FAIL, {"run_id": JOB, "lock_token": TOKEN, "error": "boom"})
    return decide(sync, report, NOW)


def lease_expires(sync: SyncConfiguration) -> Decision:
    return decide(sync, system_command(sync, SystemTrigger.LOCK_EXPIRED), NOW + timedelta(hours=1))


@pytest.mark.parametrize("report", [run_fails, lease_expires])
def test_a_run_failing_while_paused_counts_and_keeps_every_hold(report: Any) -> None:
    sync = paused_mid_run(failures=0)
    decision = report(sync)
    assert decision.outcome is Outcome.APPLIED
    # One change: the failure. No status change (it stays SUSPENDED), no hold replaced.
    assert len(decision.changes) == 1
    assert decision.changes[0].event_type in (EventType.RUN_FAILED, EventType.LOCK_EXPIRED)
    after = decision.final
    assert after is not None and after.status is S.SUSPENDED
    assert labels(after) == ["maintenance:INC-1", "user:alice"]
    assert after.pause_reason == "maint" and after.consecutive_failures == 1
    assert after.lock_token is None
    # A plain resume releases the plain hold only: the named one stays.
    resumed = run(after, command(C.RESUME, caller="alice"))
    assert resumed.status is S.SUSPENDED and labels(resumed) == ["maintenance:INC-1"]


@pytest.mark.parametrize("report", [run_fails, lease_expires])
def test_a_paused_continuous_sync_failing_at_the_threshold_gains_the_failures_hold(
    report: Any,
) -> None:
    decision = report(paused_mid_run(failures=4))
    kinds = [c.event_type for c in decision.changes]
    assert kinds[1:] == [EventType.HOLDS_CHANGED], kinds  # not a status change: still SUSPENDED
    added = decision.changes[1]
    assert added.actor == "system" and added.trigger == "auto_suspend"
    after = decision.final
    assert after is not None and after.status is S.SUSPENDED and after.consecutive_failures == 5
    assert labels(after) == ["maintenance:INC-1", "user:alice", FAILURES_HOLD]
    # Releasing the named hold leaves it suspended for its failures; a plain resume then
    # releases the plain hold and the failures' (the contract's plain resume).
    named = run(after, command(C.RESUME, {"hold": "maintenance:INC-1"}))  # its owner
    assert named.status is S.SUSPENDED and labels(named) == ["user:alice", FAILURES_HOLD]
    plain = run(named, command(C.RESUME, caller="alice"))
    assert plain.status is S.ACTIVE and plain.consecutive_failures == 0


@pytest.mark.parametrize("report", [run_fails, lease_expires])
def test_a_failure_at_the_threshold_of_a_sync_with_every_hold_it_may_have_is_still_counted(
    report: Any,
) -> None:
    sync = paused_mid_run(failures=4)
    others = [command(C.PAUSE, {"hold": f"team:{i}"}) for i in range(MAX_HOLDS - 2)]
    full = run(sync, *others)
    assert len(full.pause_holds) == MAX_HOLDS
    decision = report(full)
    assert decision.outcome is Outcome.APPLIED, decision.error
    assert [c.event_type for c in decision.changes][1:] == []  # no room for the failures' hold
    assert decision.final is not None and decision.final.lock_token is None
    assert decision.final.consecutive_failures == 5 and len(decision.final.pause_holds) == MAX_HOLDS


def test_the_failures_hold_is_placed_once_and_outlives_a_timed_hold() -> None:
    running = paused_mid_run(failures=4)
    timed = run(running, command(C.PAUSE, {"hold": "window:1", "until": "PT1H"}))
    decision = run_fails(timed)
    after = decision.final
    assert after is not None
    assert labels(after) == ["maintenance:INC-1", "user:alice", "window:1", FAILURES_HOLD]
    # Held already: a later failure (a run started after a resume elsewhere) adds no other.
    again = run_fails(timed.model_copy(update={"pause_holds": after.pause_holds}))
    assert again.final is not None and labels(again.final).count(FAILURES_HOLD) == 1
    # The timed hold expires; the failures' hold stays, and so does the count.
    expired = decide(
        after, system_command(after, SystemTrigger.PAUSE_EXPIRED), NOW + timedelta(hours=2)
    )
    assert expired.final is not None and expired.final.status is S.SUSPENDED
    assert labels(expired.final) == ["maintenance:INC-1", "user:alice", FAILURES_HOLD]
    assert expired.final.consecutive_failures == 5


def test_a_paused_initial_only_sync_failing_at_the_threshold_stays_paused() -> None:
    decision = run_fails(paused_mid_run(failures=4, mode="initial_only"))
    assert [c.event_type for c in decision.changes] == [EventType.RUN_FAILED]
    after = decision.final
    assert after is not None and after.status is S.SUSPENDED
    assert labels(after) == ["maintenance:INC-1", "user:alice"]


# --- timed pauses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("until", "problem"),
    [
        ("PT0S", "must be in the future"),
        ("2000-01-01T00:00:00Z", "must be in the future"),
        ("P91D", "must be at most 90 days away"),
        ("2030-01-01T00:00:00+00:00", "must be at most 90 days away"),
    ],
)
def test_until_must_be_future_and_at_most_90_days(until: str, problem: str) -> None:
    decision = decide(active(), command(C.PAUSE, {"until": until}), NOW)
    rejected(decision, ErrorCode.VALIDATION_ERROR, "until")
    assert decision.error is not None and problem in decision.error.message


@pytest.mark.parametrize("until", ["2h", "P1M", "P1Y", "PT", "tomorrow", "2024-01-02T00:00:00"])
def test_until_that_is_neither_a_time_nor_a_duration_is_refused_when_parsed(until: str) -> None:
    parsed = parse_data(C.PAUSE, SYNC_ID, {"until": until})
    assert isinstance(parsed, CommandError) and parsed.code is ErrorCode.VALIDATION_ERROR
    assert parsed.details["errors"][0]["field"] == "until"


def test_a_timed_pause_is_stored_absolute_and_expires_by_itself() -> None:
    at = "2024-01-02T03:00:00+01:00"  # 02:00 UTC
    sync = run(
        active(),
        command(C.PAUSE, {"hold": "m:1", "until": at}, caller="ops"),
        command(C.PAUSE, {"until": "PT30M"}),
    )
    assert [h.until for h in sync.pause_holds] == [
        datetime(2024, 1, 2, 2, tzinfo=UTC),
        NOW + timedelta(minutes=30),
    ]
    assert timer_of(sync) == NOW + timedelta(minutes=30)  # the earliest until
    expire = system_command(sync, SystemTrigger.PAUSE_EXPIRED)
    assert decide(sync, expire, NOW + timedelta(minutes=29)).outcome is Outcome.NOOP
    first = decide(sync, expire, NOW + timedelta(minutes=30))
    (change,) = first.changes
    assert (change.event_type, change.actor, change.trigger) == (
        EventType.HOLDS_CHANGED,
        "system",
        "pause_expired",
    )
    assert change.system and change.sync.status is S.SUSPENDED and labels(change.sync) == ["m:1"]
    assert timer_of(change.sync) == datetime(2024, 1, 2, 2, tzinfo=UTC)
    last = decide(change.sync, expire, NOW + timedelta(hours=3))
    assert last.final is not None and last.final.status is S.ACTIVE
    assert last.changes[0].trigger == "pause_expired"
    # Fell due while paused (at NOW + 3 min, interval 300 s): a run at once, counted.
    assert last.changes[0].extra["runs_skipped_while_paused"] == 1 + (3 * 3600 - 180) // 300
    assert last.changes[1].event_type is EventType.RUN_REQUESTED


# --- resume modes ---------------------------------------------------------------------------


def test_resume_full_requests_a_full_run_and_incremental_one_since_the_last_sync() -> None:
    synced = NOW - timedelta(hours=1)
    sync = run(active(last_sync_at=synced), command(C.PAUSE))
    later = NOW + timedelta(minutes=10)
    full = decide(sync, command(C.RESUME, {"mode": "full"}), later)
    incremental = decide(sync, command(C.RESUME), later)
    assert full.changes[1].event_type is EventType.RUN_REQUESTED
    assert full.changes[1].extra["modified_since"] is None
    assert full.changes[1].extra["full_sync"] is True
    assert incremental.changes[1].extra["modified_since"] == synced
    assert incremental.changes[1].extra["full_sync"] is False


def test_resume_next_interval_requests_no_run_and_waits_an_interval() -> None:
    sync = run(active(), command(C.PAUSE))
    later = NOW + timedelta(minutes=10)
    decision = decide(sync, command(C.RESUME, {"run": "next_interval", "mode": "full"}), later)
    (change,) = decision.changes
    assert change.sync.next_sync_at == later + timedelta(seconds=300)
    assert change.sync.pending_full_sync is True  # the next run is full
    assert change.extra["runs_skipped_while_paused"] == 2  # due at +3 min, then +8 min


def test_runs_skipped_is_zero_when_the_sync_never_fell_due() -> None:
    sync = run(active(next_sync_at=NOW + timedelta(hours=1)), command(C.PAUSE))
    decision = decide(sync, command(C.RESUME), NOW + timedelta(minutes=5))
    (change,) = decision.changes  # not due: no run requested
    assert change.extra["runs_skipped_while_paused"] == 0


def test_an_update_states_the_status_it_places_no_hold_on_a_paused_sync() -> None:
    sync = run(active(), command(C.PAUSE, {"hold": "m:1"}, caller="ops"))
    assert decide(sync, command(C.UPDATE, {"is_active": False}), NOW).outcome is Outcome.NOOP
    plain = decide(sync, command(C.UPDATE, {"status": "ACTIVE"}), NOW)
    assert plain.outcome is Outcome.NOOP  # a plain resume: the named hold stays


def test_results_of_pause_and_resume_name_the_holds_left() -> None:
    sync = run(active(), command(C.PAUSE, {"hold": "m:1"}, caller="ops"))
    decision = decide(sync, command(C.PAUSE), NOW)
    result = command_result("c1", C.PAUSE.value, SYNC_ID, decision, decision.final)
    assert result.holds == ["m:1", "user:user_bob"]
    trigger = decide(active(), command(C.TRIGGER), NOW)
    assert command_result("c2", C.TRIGGER.value, SYNC_ID, trigger, trigger.final).holds is None


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("PT2H", timedelta(hours=2)),
        ("P1D", timedelta(days=1)),
        ("P1DT12H30M", timedelta(days=1, hours=12, minutes=30)),
        ("P2W", timedelta(weeks=2)),
        ("PT1.5S", timedelta(seconds=1.5)),
        ("PT90M", timedelta(minutes=90)),
    ],
)
def test_iso_durations(text: str, delta: timedelta) -> None:
    assert parse_duration(text) == delta
    assert parse_duration(iso_duration(delta)) == delta


@pytest.mark.parametrize("text", ["", "P", "PT", "P1DT", "P1M", "P1Y", "PT1H2", "pt2h", "P1W2D"])
def test_not_iso_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_times_need_an_offset() -> None:
    assert parse_time("2030-01-01T00:00:00Z") == datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_time("2030-01-01T00:00:00.1234567+02:00") is not None
    assert parse_time("2030-01-01T00:00:00") is None
    assert parse_time("2030-02-30T00:00:00Z") is None


@pytest.mark.parametrize(
    ("friendly", "iso"),
    [("2h", "PT2H"), ("90m", "PT90M"), ("1d12h", "P1DT12H"), ("2w", "P2W"), ("30s", "PT30S")],
)
def test_friendly_durations_become_iso(friendly: str, iso: str) -> None:
    assert friendly_duration(friendly) == iso
    assert friendly_duration(iso) == iso


def test_friendly_duration_refuses_other_text() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        friendly_duration("two hours")
    assert until_text(timedelta(hours=2)) == "PT2H"
    with pytest.raises(ValueError, match="offset"):
        until_text(datetime(2030, 1, 1))  # noqa: DTZ001 - the point: a naive time is refused
