"""``sync.unlock`` and status FAILED (v1.1): every new transition and every refusal.

Expectations are written from the contract (docs/contract.md, "Pause, resume and runs"), not
read from ``table.TABLE``.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from statemachine.commands import CommandType, SystemTrigger
from statemachine.decider import decide
from statemachine.decision import Decision, EventType, JobStatus, JobTrigger, Outcome
from statemachine.errors import ErrorCode
from statemachine.model import SyncConfiguration
from statemachine.runs import Policy, system_command
from statemachine.status import RunStatus, SyncStatus
from statemachine.table import STATUS_ROLES, allowed_commands
from tests.helpers.syncs import T0, T1, make_command, make_sync

S = SyncStatus
C = CommandType
NOW = T1
JOB = "job_01HZX3T5ZQ8Y4V9B2M6N7P0QRS"
TOKEN = 7


def locked(status: SyncStatus, **overrides: Any) -> SyncConfiguration:
    """A sync whose run (job ``JOB``, token ``TOKEN``) holds the lock of worker ``w1``."""
    fields: dict[str, Any] = {
        "version": 5,
        "lock_token": TOKEN,
        "sync_run_counter": TOKEN,
        "current_sync_run_id": JOB,
        "locked_by_worker_id": "w1",
        "locked_at": T0,
        "lock_expires_at": NOW + timedelta(minutes=5),
        "last_run_status": RunStatus.IN_PROGRESS,
        "next_sync_at": None,
        "consecutive_failures": 2,
    }
    fields.update(overrides)
    return make_sync(status=status, **fields)


def unlock(sync: SyncConfiguration, **data: Any) -> Decision:
    return decide(sync, make_command(C.UNLOCK, data), NOW)


def refused(decision: Decision, code: ErrorCode) -> dict[str, Any]:
    assert decision.outcome is Outcome.REJECTED
    assert decision.changes == ()
    assert decision.error is not None and decision.error.code is code, decision.error
    return decision.error.details


# --------------------------------------------------------------------------- unlock


@pytest.mark.parametrize("status", [S.ACTIVE, S.SUSPENDED, S.CANCELED])
def test_unlock_releases_the_lock_as_one_versioned_change(status: SyncStatus) -> None:
    sync = locked(status)
    decision = unlock(sync, unlocked_by_user_id="user_ops", reason="worker w1 is stuck")
    assert decision.outcome is Outcome.APPLIED
    (change,) = decision.changes
    after = change.sync
    assert change.event_type is EventType.LOCK_RELEASED
    assert change.trigger == "sync.unlock"
    assert change.actor == "user:user_ops" and change.reason == "worker w1 is stuck"
    assert change.extra == {"run_id": JOB, "worker_id": "w1"}
    assert (change.from_status, change.to_status) == (status, status)
    assert after.version == sync.version + 1 and after.updated_at == NOW
    assert after.status is status
    assert (after.lock_token, after.locked_by_worker_id, after.locked_at) == (None, None, None)
    assert after.lock_expires_at is None and after.locked is False
    # Interrupted, not failed: no failure is counted, the run status is no longer in progress.
    assert after.consecutive_failures == sync.consecutive_failures
    assert after.last_error == sync.last_error and after.last_run_status is None
    # Its job ends interrupted.
    (job,) = change.jobs
    assert (job.sync_job_id, job.status, job.phase) == (JOB, JobStatus.INTERRUPTED, None)
    assert job.error == "worker w1 is stuck" and job.completed_at == NOW


def test_unlock_makes_an_active_sync_due_at_once() -> None:
    after = unlock(locked(S.ACTIVE)).final
    assert after is not None and after.next_sync_at == NOW
    # The scheduler then requests a run (no lock any more).
    requested = decide(after, system_command(after, SystemTrigger.REQUEST_RUN), NOW)
    assert [c.event_type for c in requested.changes] == [EventType.RUN_REQUESTED]


@pytest.mark.parametrize("status", [S.SUSPENDED, S.CANCELED])
def test_unlock_schedules_nothing_for_a_paused_or_canceled_sync(status: SyncStatus) -> None:
    after = unlock(locked(status)).final
    assert after is not None and after.next_sync_at is None
    requested = decide(after, system_command(after, SystemTrigger.REQUEST_RUN), NOW)
    assert requested.changes == ()


def test_unlock_without_a_user_is_the_keys_caller() -> None:
    command = dataclasses.replace(make_command(C.UNLOCK, {}), key_id="key_9")
    (change,) = decide(locked(S.ACTIVE), command, NOW).changes
    assert change.actor == "key:key_9" and change.reason is None
    assert change.jobs[0].error == "unlocked"


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        (C.RUN_HEARTBEAT, {}),
        (C.RUN_CHECKPOINT, {"files_synced": 3}),
        (C.RUN_COMPLETE, {"files_synced": 3}),
        (C.RUN_FAIL, {"error": "boom"}),
    ],
)
def test_the_old_token_is_lock_lost_after_unlock(kind: CommandType, extra: dict[str, Any]) -> None:
    before = locked(S.ACTIVE)
    report = make_command(kind, {"run_id": JOB, "lock_token": TOKEN, **extra})
    assert decide(before, report, NOW).outcome is Outcome.APPLIED  # valid before the unlock
    after = unlock(before).final
    assert after is not None
    refused(decide(after, report, NOW), ErrorCode.LOCK_LOST)


def test_a_new_worker_takes_the_lock_after_unlock_with_a_larger_token() -> None:
    after = unlock(locked(S.ACTIVE)).final
    assert after is not None
    started = decide(after, make_command(C.RUN_START, {"worker_id": "w2"}), NOW)
    assert started.outcome is Outcome.APPLIED
    assert started.final is not None and started.final.locked_by_worker_id == "w2"
    assert started.final.lock_token is not None and started.final.lock_token > TOKEN


def test_unlock_requests_the_full_run_asked_for_while_the_lock_was_held() -> None:
    sync = locked(S.ACTIVE, pending_full_sync=True, last_sync_at=T0)
    decision = unlock(sync)
    assert [c.event_type for c in decision.changes] == [
        EventType.LOCK_RELEASED,
        EventType.RUN_REQUESTED,
    ]
    requested = decision.changes[1]
    assert requested.extra["modified_since"] is None  # a full run
    # Requested, not yet done: the flag stays until that full run completes.
    assert requested.sync.pending_full_sync is True and requested.sync.queued_full_sync
    assert [c.sync.version for c in decision.changes] == [sync.version + 1, sync.version + 2]


def test_unlock_of_a_paused_sync_keeps_the_pending_full_run_for_later() -> None:
    decision = unlock(locked(S.SUSPENDED, pending_full_sync=True))
    (change,) = decision.changes
    assert change.sync.pending_full_sync is True


@pytest.mark.parametrize(
    "status", [S.DRAFT, S.PENDING, S.ACTIVE, S.SUSPENDED, S.FAILED, S.COMPLETED, S.CANCELED]
)
def test_unlock_with_nothing_locked_is_a_noop(status: SyncStatus) -> None:
    sync = make_sync(status=status, version=4)
    decision = unlock(sync, reason="just in case")
    assert decision.outcome is Outcome.NOOP
    assert decision.changes == () and decision.error is None
    assert decision.final == sync


def test_unlock_of_an_archived_sync_is_an_invalid_transition() -> None:
    details = refused(unlock(make_sync(status=S.ARCHIVED)), ErrorCode.INVALID_TRANSITION)
    assert details == {"current_status": "ARCHIVED", "allowed_commands": ["sync.archive"]}


def test_unlock_is_offered_only_while_a_run_holds_the_lock() -> None:
    assert "sync.unlock" in allowed_commands(S.ACTIVE, locked=True)
    assert "sync.unlock" not in allowed_commands(S.ACTIVE, locked=False)
    # The details of an invalid transition name it while a run holds the lock, not otherwise.
    resume = make_command(C.RESUME, {})
    details = refused(decide(locked(S.CANCELED), resume, NOW), ErrorCode.INVALID_TRANSITION)
    assert "sync.unlock" in details["allowed_commands"]
    free = refused(decide(make_sync(status=S.CANCELED), resume, NOW), ErrorCode.INVALID_TRANSITION)
    assert "sync.unlock" not in free["allowed_commands"]


def test_unlock_data_is_validated() -> None:
    from statemachine.commands import UnlockData, parse_data
    from statemachine.errors import CommandError

    sync_id = make_sync().sync_config_id
    assert parse_data(C.UNLOCK, sync_id, {}) == UnlockData()
    bad = parse_data(C.UNLOCK, sync_id, {"lock_token": 7})
    assert isinstance(bad, CommandError) and bad.code is ErrorCode.VALIDATION_ERROR
    assert not C.UNLOCK.is_run  # scope syncs:write


# --------------------------------------------------------------------------- FAILED


def failing(mode: str, failures: int, **overrides: Any) -> SyncConfiguration:
    return locked(S.ACTIVE, sync_mode=mode, consecutive_failures=failures, **overrides)


def fail(sync: SyncConfiguration, policy: Policy | None = None) -> Decision:
    report = make_command(C.RUN_FAIL, {"run_id": JOB, "lock_token": TOKEN, "error": "403"})
    return decide(sync, report, NOW, policy) if policy else decide(sync, report, NOW)


def expire(sync: SyncConfiguration) -> Decision:
    later = NOW + timedelta(hours=1)
    return decide(sync, system_command(sync, SystemTrigger.LOCK_EXPIRED), later)


def assert_failed(decision: Decision, first: EventType, failures: int) -> SyncConfiguration:
    assert decision.outcome is Outcome.APPLIED
    assert [c.event_type for c in decision.changes] == [first, EventType.STATUS_CHANGED]
    failed = decision.changes[1]
    assert (failed.from_status, failed.to_status) == (S.ACTIVE, S.FAILED)
    assert failed.trigger == "failures" and failed.actor == "system" and failed.system
    assert failed.reason is not None and f"after {failures} consecutive failures" in failed.reason
    after = failed.sync
    assert after.status is S.FAILED
    assert after.is_active is False and after.paused is False
    assert (after.pause_reason, after.paused_at, after.paused_by_user_id) == (None, None, None)
    assert after.next_sync_at is None  # never scheduled while FAILED
    assert after.lock_token is None and after.consecutive_failures == failures
    assert after.last_run_status is RunStatus.FAILED
    return after


def test_an_initial_only_sync_failing_five_times_in_a_row_goes_failed() -> None:
    after = assert_failed(fail(failing("initial_only", 4)), EventType.RUN_FAILED, 5)
    assert after.last_error == "403"


def test_an_expired_lease_counts_toward_failed_too() -> None:
    assert_failed(expire(failing("initial_only", 4)), EventType.LOCK_EXPIRED, 5)


def test_failed_follows_the_auto_suspend_threshold_of_the_policy() -> None:
    policy = Policy(max_consecutive_failures=2)
    assert_failed(fail(failing("initial_only", 1), policy), EventType.RUN_FAILED, 2)
    below = fail(failing("initial_only", 0), policy)
    assert below.final is not None and below.final.status is S.ACTIVE


def test_an_initial_only_sync_below_the_threshold_stays_active() -> None:
    decision = fail(failing("initial_only", 3))
    assert [c.event_type for c in decision.changes] == [EventType.RUN_FAILED]
    assert decision.final is not None and decision.final.status is S.ACTIVE
    assert decision.final.next_sync_at is not None  # retried after a backoff


@pytest.mark.parametrize("report", [fail, expire])
def test_a_continuous_sync_that_keeps_failing_is_still_auto_suspended(report: Any) -> None:
    decision = report(failing("continuous", 4))
    after = decision.final
    assert after is not None and after.status is S.SUSPENDED
    assert after.paused is True and after.paused_by_user_id == "system"
    assert decision.changes[-1].trigger == "auto_suspend"


def failed_sync(**overrides: Any) -> SyncConfiguration:
    fields: dict[str, Any] = {
        "sync_mode": "initial_only",
        "version": 9,
        "consecutive_failures": 5,
        "last_error": "403",
        "last_run_status": RunStatus.FAILED,
        "last_sync_at": None,
    }
    fields.update(overrides)
    return make_sync(status=S.FAILED, **fields)


@pytest.mark.parametrize(
    ("command_type", "data", "actor", "job_trigger"),
    [
        (C.TRIGGER, {"requested_by_user_id": "user_bob"}, "user:user_bob", JobTrigger.MANUAL),
        (C.RESUME, {"resumed_by_user_id": "user_bob"}, "user:user_bob", JobTrigger.RESUME),
        (C.TRIGGER, {}, "unknown", JobTrigger.MANUAL),
    ],
)
def test_trigger_or_resume_of_a_failed_sync_makes_it_pending_and_requests_its_run(
    command_type: CommandType, data: dict[str, Any], actor: str, job_trigger: JobTrigger
) -> None:
    sync = failed_sync()
    decision = decide(sync, make_command(command_type, data), NOW)
    assert decision.outcome is Outcome.APPLIED
    pending, requested = decision.changes
    assert pending.event_type is EventType.STATUS_CHANGED
    assert (pending.from_status, pending.to_status) == (S.FAILED, S.PENDING)
    assert pending.trigger == command_type.value and pending.actor == actor
    assert pending.sync.next_sync_at == NOW  # due at once
    assert pending.sync.consecutive_failures == 0
    assert pending.sync.is_active is False and pending.sync.paused is False
    assert requested.event_type is EventType.RUN_REQUESTED
    assert requested.sync.status is S.PENDING and requested.actor == actor
    assert requested.extra["modified_since"] is None  # it never completed a run: a full one
    (job,) = requested.jobs
    assert job.trigger is job_trigger and job.status is JobStatus.RUNNING
    assert decision.sync_job_id == job.sync_job_id
    assert [c.sync.version for c in decision.changes] == [10, 11]
    # A worker can now start the run: PENDING -> ACTIVE as for a new sync.
    final = decision.final
    assert final is not None
    started = decide(final, make_command(C.RUN_START, {"worker_id": "w9"}), NOW)
    assert started.final is not None and started.final.status is S.ACTIVE


def test_trigger_of_a_failed_sync_in_full_mode_requests_a_full_run() -> None:
    sync = failed_sync(last_sync_at=T0)
    decision = decide(sync, make_command(C.TRIGGER, {"mode": "full"}), NOW)
    assert decision.changes[1].extra["modified_since"] is None
    incremental = decide(sync, make_command(C.TRIGGER, {}), NOW)
    assert incremental.changes[1].extra["modified_since"] == T0


def test_pause_of_a_failed_sync_is_an_invalid_transition_naming_what_is_allowed() -> None:
    decision = decide(failed_sync(), make_command(C.PAUSE, {"paused_by_user_id": "u1"}), NOW)
    details = refused(decision, ErrorCode.INVALID_TRANSITION)
    assert details == {
        "current_status": "FAILED",
        "allowed_commands": [
            "sync.archive",
            "sync.cancel",
            "sync.resume",
            "sync.trigger",
            "sync.update",
        ],
    }
    assert decision.error is not None and "FAILED" in decision.error.message


@pytest.mark.parametrize(
    ("command_type", "data"),
    [
        (C.ACTIVATE, {}),
        (C.RUN_START, {"worker_id": "w1"}),
        (C.RUN_HEARTBEAT, {"run_id": JOB, "lock_token": TOKEN}),
        (C.RUN_FAIL, {"run_id": JOB, "lock_token": TOKEN, "error": "x"}),
    ],
)
def test_other_commands_are_refused_from_failed(
    command_type: CommandType, data: dict[str, Any]
) -> None:
    decision = decide(failed_sync(), make_command(command_type, data), NOW)
    assert refused(decision, ErrorCode.INVALID_TRANSITION)["current_status"] == "FAILED"


@pytest.mark.parametrize(
    ("command_type", "dest"), [(C.CANCEL, S.CANCELED), (C.ARCHIVE, S.ARCHIVED)]
)
def test_cancel_and_archive_of_a_failed_sync(command_type: CommandType, dest: SyncStatus) -> None:
    decision = decide(failed_sync(), make_command(command_type, {"reason": "give up"}), NOW)
    (change,) = decision.changes
    assert change.event_type is EventType.STATUS_CHANGED
    assert (change.from_status, change.to_status) == (S.FAILED, dest)
    assert change.sync.next_sync_at is None and change.reason == "give up"


def test_update_of_a_failed_sync_keeps_it_failed() -> None:
    decision = decide(failed_sync(), make_command(C.UPDATE, {"connection_id": "conn_new"}), NOW)
    (change,) = decision.changes
    assert change.event_type is EventType.UPDATED
    assert change.sync.status is S.FAILED and change.sync.connection_id == "conn_new"


def test_the_scheduler_never_requests_a_run_of_a_failed_sync() -> None:
    sync = failed_sync(next_sync_at=NOW - timedelta(hours=1))
    decision = decide(sync, system_command(sync, SystemTrigger.REQUEST_RUN), NOW)
    assert decision.changes == ()


@pytest.mark.parametrize("flag", ["is_active", "paused"])
def test_a_failed_sync_is_neither_active_nor_paused(flag: str) -> None:
    assert make_sync(status=S.FAILED).model_dump(include={"is_active", "paused"}) == {
        "is_active": False,
        "paused": False,
    }
    with pytest.raises(ValidationError):
        make_sync(status=S.FAILED, **{flag: True})


def test_failed_is_documented_as_a_sync_status() -> None:
    assert STATUS_ROLES[S.FAILED].startswith("sync status: an initial_only sync")
