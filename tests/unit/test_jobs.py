"""``decide`` for the v1.1 lifecycle additions: runs as jobs, trigger ``mode``, updates with
``is_active``/``status``, users from the caller, ``provider`` optional, ``locked``."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from typing import Any

import pytest

from statemachine.commands import Command, CommandType, SystemTrigger
from statemachine.decider import decide
from statemachine.decision import (
    Decision,
    EventType,
    JobEffect,
    JobPhase,
    JobStatus,
    JobTrigger,
    Outcome,
)
from statemachine.errors import ErrorCode
from statemachine.jobs import job_id
from statemachine.model import SyncConfiguration
from statemachine.runs import system_command
from statemachine.status import SyncStatus
from tests.helpers.syncs import SYNC_ID, T0, T1, make_command, make_sync

S = SyncStatus
C = CommandType
NOW = T1
ULID = re.compile(r"^job_[0-9A-HJKMNP-TV-Z]{26}$")


def with_caller(command: Command, caller: str | None) -> Command:
    return dataclasses.replace(command, caller=caller)


def applied(decision: Decision) -> SyncConfiguration:
    assert decision.outcome is Outcome.APPLIED, decision.error
    final = decision.final
    assert final is not None
    return final


def jobs_of(decision: Decision) -> list[JobEffect]:
    return [job for change in decision.changes for job in change.jobs]


def error_fields(decision: Decision) -> set[str]:
    assert decision.error is not None
    return {e["field"] for e in decision.error.details.get("errors", [])}


CREATE: dict[str, Any] = {
    "bucket_id": "bkt_1",
    "connection_id": "conn_1",
    "source_path": "any text at all, no provider yet",
}


def running(**overrides: Any) -> SyncConfiguration:
    """An ACTIVE sync whose run (job ``job_RUN``) holds the lock."""
    fields: dict[str, Any] = {
        "status": S.ACTIVE,
        "locked_by_worker_id": "w1",
        "locked_at": T0,
        "lock_expires_at": T0 + timedelta(minutes=5),
        "lock_token": 1,
        "sync_run_counter": 1,
        "current_sync_run_id": "job_RUN",
        "last_sync_at": T0 - timedelta(days=1),
    }
    fields.update(overrides)
    return make_sync(**fields)


# --- users from the caller, provider optional --------------------------------------------


def test_create_without_provider_or_user_takes_the_caller() -> None:
    decision = decide(None, with_caller(make_command(C.CREATE, CREATE), "user_ada"), NOW)
    sync = applied(decision)
    assert sync.provider is None and sync.created_by_user_id == "user_ada"
    assert decision.changes[0].actor == "user:user_ada"
    by_key = decide(None, with_caller(make_command(C.CREATE, CREATE), "key:k_1"), NOW)
    assert applied(by_key).created_by_user_id == "key:k_1"
    assert by_key.changes[0].actor == "key:k_1"


def test_create_without_user_or_caller_names_the_field() -> None:
    decision = decide(None, make_command(C.CREATE, CREATE), NOW)
    assert decision.error is not None and decision.error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(decision) == {"created_by_user_id"}


def test_create_with_provider_still_checks_source_path() -> None:
    bad = decide(
        None, make_command(C.CREATE, {**CREATE, "provider": "s3", "created_by_user_id": "u"}), NOW
    )
    assert bad.error is not None and "source_path" in bad.error.message


def test_pause_with_empty_data_takes_the_caller() -> None:
    sync = make_sync(status=S.ACTIVE)
    paused = applied(decide(sync, with_caller(make_command(C.PAUSE, {}), "user_bob"), NOW))
    assert paused.status is S.SUSPENDED and paused.paused_by_user_id == "user_bob"
    assert paused.pause_reason == "paused by user_bob"
    nobody = decide(sync, make_command(C.PAUSE, {}), NOW)
    assert nobody.error is not None and error_fields(nobody) == {"paused_by_user_id"}


def test_provider_may_be_set_once() -> None:
    sync = make_sync(provider=None, source_path="Not A Bucket")
    bad = decide(sync, make_command(C.UPDATE, {"provider": "s3"}), NOW)
    assert bad.error is not None and "source_path" in bad.error.message
    fine = make_sync(provider=None)
    assert applied(decide(fine, make_command(C.UPDATE, {"provider": "s3"}), NOW)).provider == "s3"
    other = decide(make_sync(), make_command(C.UPDATE, {"provider": "tigris"}), NOW)
    assert other.error is not None and error_fields(other) == {"provider"}


def test_description_is_configuration() -> None:
    sync = applied(decide(make_sync(), make_command(C.UPDATE, {"description": "d" * 500}), NOW))
    assert sync.description == "d" * 500
    long = decide(make_sync(), make_command(C.UPDATE, {"description": "d" * 501}), NOW)
    assert long.error is not None and error_fields(long) == {"description"}


# --- update with is_active / status --------------------------------------------------------


@pytest.mark.parametrize("data", [{"is_active": False}, {"status": "SUSPENDED"}])
def test_update_that_pauses_is_two_versions_in_order(data: dict[str, Any]) -> None:
    sync = make_sync(status=S.ACTIVE, version=7)
    command = with_caller(make_command(C.UPDATE, {"batch_size": 20, **data}), "user_eve")
    decision = decide(sync, command, NOW)
    final = applied(decision)
    first, second = decision.changes
    assert (first.event_type, first.sync.version) == (EventType.UPDATED, 8)
    assert first.sync.batch_size == 20 and first.sync.status is S.ACTIVE
    assert (second.event_type, second.sync.version) == (EventType.STATUS_CHANGED, 9)
    assert (second.from_status, second.to_status) == (S.ACTIVE, S.SUSPENDED)
    assert final.paused and not final.is_active and final.paused_by_user_id == "user_eve"


def test_update_that_resumes_requests_the_due_run_as_a_resume_job() -> None:
    sync = make_sync(status=S.SUSPENDED, next_sync_at=T0)
    decision = decide(sync, make_command(C.UPDATE, {"is_active": True}), NOW)
    assert [c.event_type for c in decision.changes] == [
        EventType.STATUS_CHANGED,
        EventType.RUN_REQUESTED,
    ]
    assert decision.changes[1].trigger == "resume"
    (job,) = jobs_of(decision)
    assert job.trigger is JobTrigger.RESUME and decision.sync_job_id == job.sync_job_id


def test_update_pausing_a_paused_sync_changes_only_the_configuration() -> None:
    sync = make_sync(status=S.SUSPENDED)
    only = decide(sync, make_command(C.UPDATE, {"batch_size": 20, "is_active": False}), NOW)
    assert [c.event_type for c in only.changes] == [EventType.UPDATED]
    nothing = decide(sync, make_command(C.UPDATE, {"is_active": False}), NOW)
    assert nothing.outcome is Outcome.NOOP and nothing.changes == ()
    running_sync = make_sync(status=S.ACTIVE)
    assert decide(running_sync, make_command(C.UPDATE, {"status": "ACTIVE"}), NOW).outcome is (
        Outcome.NOOP
    )


def test_update_status_where_the_table_forbids_it_is_invalid_transition() -> None:
    decision = decide(make_sync(status=S.DRAFT), make_command(C.UPDATE, {"is_active": False}), NOW)
    assert decision.error is not None and decision.error.code is ErrorCode.INVALID_TRANSITION
    assert decision.changes == ()


# --- jobs -----------------------------------------------------------------------------------


def test_job_ids_are_ulids_derived_from_the_change() -> None:
    first = job_id(SYNC_ID, 3, NOW)
    assert ULID.match(first)
    assert job_id(SYNC_ID, 3, NOW) == first  # pure: the same change, the same id
    assert job_id(SYNC_ID, 4, NOW) != first and job_id("sync_other", 3, NOW) != first
    assert job_id(SYNC_ID, 3, NOW + timedelta(milliseconds=1)) > first  # sorts by time


def test_trigger_requests_a_manual_job_named_in_event_and_decision() -> None:
    sync = make_sync(status=S.ACTIVE, last_sync_at=T0, version=4)
    decision = decide(sync, make_command(C.TRIGGER, {}), NOW)
    final = applied(decision)
    (change,) = decision.changes
    job = change.extra["sync_job_id"]
    assert job == job_id(SYNC_ID, 5, NOW) and decision.sync_job_id == job
    assert change.trigger == "manual" and change.extra["full_sync"] is False
    assert change.extra["modified_since"] == T0
    assert final.queued_sync_job_id == job
    assert jobs_of(decision) == [
        JobEffect(
            sync_job_id=job,
            status=JobStatus.RUNNING,
            phase=JobPhase.QUEUED,
            trigger=JobTrigger.MANUAL,
            full_sync=False,
        )
    ]
    # Requested again before a worker started it: the same job.
    again = decide(final, make_command(C.TRIGGER, {}), NOW + timedelta(seconds=1))
    assert again.sync_job_id == job and again.changes[0].extra["sync_job_id"] == job


def test_scheduled_request_is_a_scheduled_job() -> None:
    sync = make_sync(status=S.ACTIVE, next_sync_at=T0)
    decision = decide(sync, system_command(sync, SystemTrigger.REQUEST_RUN), NOW)
    (job,) = jobs_of(decision)
    assert job.trigger is JobTrigger.SCHEDULED and decision.changes[0].trigger == "scheduled"


def test_full_trigger_has_no_modified_since_and_drops_the_checkpoint() -> None:
    sync = make_sync(status=S.ACTIVE, last_sync_at=T0, resume_cursor="page-9")
    decision = decide(sync, make_command(C.TRIGGER, {"mode": "full"}), NOW)
    (change,) = decision.changes
    assert change.extra["modified_since"] is None and change.extra["full_sync"] is True
    assert change.extra["checkpoint"]["resume_cursor"] is None
    assert jobs_of(decision)[0].full_sync


def test_full_trigger_while_locked_is_requested_when_the_lock_is_released() -> None:
    sync = running()
    pending = decide(sync, make_command(C.TRIGGER, {"mode": "full"}), NOW)
    locked = applied(pending)
    assert locked.pending_full_sync and pending.sync_job_id is None and jobs_of(pending) == []
    assert [c.event_type for c in pending.changes] == [EventType.UPDATED]
    # Asked again: nothing more to do; an incremental trigger while locked is a noop too.
    assert decide(locked, make_command(C.TRIGGER, {"mode": "full"}), NOW).outcome is Outcome.NOOP
    assert decide(sync, make_command(C.TRIGGER, {}), NOW).outcome is Outcome.NOOP

    lock = {"run_id": "job_RUN", "lock_token": 1}
    done = decide(locked, make_command(C.RUN_COMPLETE, {**lock, "files_synced": 2}), NOW)
    final = applied(done)
    assert [c.event_type for c in done.changes] == [
        EventType.RUN_COMPLETED,
        EventType.RUN_REQUESTED,
    ]
    requested = done.changes[1]
    assert requested.extra["full_sync"] is True and requested.extra["modified_since"] is None
    assert final.pending_full_sync and final.queued_full_sync  # until the full run completes
    assert [(j.sync_job_id, j.status) for j in jobs_of(done)] == [
        ("job_RUN", JobStatus.COMPLETED),
        (requested.extra["sync_job_id"], JobStatus.RUNNING),
    ]

    failed = decide(locked, make_command(C.RUN_FAIL, {**lock, "error": "boom"}), NOW)
    assert [c.event_type for c in failed.changes][-1] is EventType.RUN_REQUESTED
    expired = locked.model_copy(update={"lock_expires_at": T0})
    reaped = decide(expired, system_command(expired, SystemTrigger.LOCK_EXPIRED), NOW)
    assert [c.event_type for c in reaped.changes][-1] is EventType.RUN_REQUESTED
    assert jobs_of(reaped)[0].status is JobStatus.INTERRUPTED
    unlocked = decide(locked, make_command(C.UNLOCK, {}), NOW)
    assert [c.event_type for c in unlocked.changes][-1] is EventType.RUN_REQUESTED
    assert jobs_of(unlocked)[0].status is JobStatus.INTERRUPTED


def test_pending_full_sync_stays_until_the_full_run_completes() -> None:
    pending = applied(decide(running(), make_command(C.TRIGGER, {"mode": "full"}), NOW))
    lock = {"run_id": "job_RUN", "lock_token": 1}
    queued = applied(decide(pending, make_command(C.RUN_COMPLETE, lock), NOW))
    job = queued.queued_sync_job_id
    assert queued.pending_full_sync and queued.queued_full_sync and job is not None
    start = make_command(C.RUN_START, {"worker_id": "w2", "sync_job_id": job})
    started = decide(queued, start, NOW)
    full = applied(started)
    assert started.changes[0].extra["modified_since"] is None  # the full run
    assert full.pending_full_sync and full.current_full_sync and not full.queued_full_sync
    # A full trigger while the full run holds the lock: nothing more to ask for.
    again = decide(full, make_command(C.TRIGGER, {"mode": "full"}), NOW)
    assert again.outcome is Outcome.NOOP
    full_lock = {"run_id": job, "lock_token": full.lock_token}

    # It fails: the flag stays, no run at once (the retry delay holds), the next run is full.
    failed = decide(full, make_command(C.RUN_FAIL, {**full_lock, "error": "boom"}), NOW)
    after_fail = applied(failed)
    assert [c.event_type for c in failed.changes] == [EventType.RUN_FAILED]
    assert after_fail.pending_full_sync and not after_fail.current_full_sync
    assert after_fail.next_sync_at is not None and after_fail.next_sync_at > NOW
    due = after_fail.next_sync_at
    retried = decide(after_fail, system_command(after_fail, SystemTrigger.REQUEST_RUN), due)
    assert retried.changes[-1].extra["modified_since"] is None
    assert retried.changes[-1].extra["full_sync"] is True

    # It completes: the flag is cleared, and no other full run is requested.
    done = decide(full, make_command(C.RUN_COMPLETE, full_lock), NOW)
    after_done = applied(done)
    assert [c.event_type for c in done.changes] == [EventType.RUN_COMPLETED]
    assert not after_done.pending_full_sync and not after_done.current_full_sync


def test_run_start_takes_the_queued_job_and_its_id_is_the_run_id() -> None:
    sync = applied(
        decide(make_sync(status=S.ACTIVE), make_command(C.TRIGGER, {"mode": "full"}), T0)
    )
    job = sync.queued_sync_job_id
    assert job is not None
    wrong = decide(sync, make_command(C.RUN_START, {"worker_id": "w", "sync_job_id": "job_X"}), NOW)
    assert wrong.error is not None and wrong.error.code is ErrorCode.VALIDATION_ERROR
    assert error_fields(wrong) == {"sync_job_id"}
    assert wrong.error.details["queued_sync_job_id"] == job

    started = decide(sync, make_command(C.RUN_START, {"worker_id": "w", "sync_job_id": job}), NOW)
    final = applied(started)
    assert final.current_sync_run_id == job and final.queued_sync_job_id is None
    assert final.locked and started.run is not None and started.run["run_id"] == job
    (change,) = started.changes
    assert change.extra["sync_job_id"] == job and change.extra["full_sync"] is True
    (effect,) = jobs_of(started)
    assert (effect.phase, effect.started_at, effect.trigger) == (JobPhase.RUNNING, NOW, None)

    # Reports name the job; a checkpoint carries its files and cursor.
    lock = {"run_id": job, "lock_token": final.lock_token}
    point = decide(
        final,
        make_command(C.RUN_CHECKPOINT, {**lock, "files_synced": 4, "resume_cursor": "c"}),
        NOW,
    )
    (progress,) = jobs_of(point)
    assert (progress.files_synced, progress.current_cursor) == (4, "c")
    failed = decide(applied(point), make_command(C.RUN_FAIL, {**lock, "error": "e" * 5000}), NOW)
    (end,) = jobs_of(failed)
    assert end.status is JobStatus.FAILED and end.phase is None and end.error == "e" * 1000
    assert end.files_synced == 4 and end.completed_at == NOW


def test_run_start_without_a_queued_job_makes_a_manual_one() -> None:
    sync = make_sync(status=S.ACTIVE, version=2)
    started = decide(sync, make_command(C.RUN_START, {"worker_id": "w"}), NOW)
    (effect,) = jobs_of(started)
    assert effect.sync_job_id == job_id(SYNC_ID, 3, NOW) == applied(started).current_sync_run_id
    assert effect.trigger is JobTrigger.MANUAL and effect.phase is JobPhase.RUNNING


@pytest.mark.parametrize("command_type", [C.CANCEL, C.ARCHIVE])
def test_cancel_or_archive_interrupts_the_running_and_the_queued_job(
    command_type: CommandType,
) -> None:
    sync = running(queued_sync_job_id="job_NEXT")
    decision = decide(sync, make_command(command_type, {"reason": "gone"}), NOW)
    effects = {j.sync_job_id: j for j in jobs_of(decision)}
    assert set(effects) == {"job_RUN", "job_NEXT"}
    assert all(j.status is JobStatus.INTERRUPTED and j.phase is None for j in effects.values())
    assert applied(decision).queued_sync_job_id is None


def test_a_v1_run_uuid_still_reports_and_makes_no_job_effects() -> None:
    uuid = "ab4f0c5e-0e2a-4c84-8e4f-6a2d3c1b0a99"
    sync = running(current_sync_run_id=uuid)
    done = decide(
        sync,
        make_command(C.RUN_COMPLETE, {"run_id": uuid.upper(), "lock_token": 1}),
        NOW,
    )
    assert done.outcome is Outcome.APPLIED and jobs_of(done) == []


# --- locked ---------------------------------------------------------------------------------


def test_locked_is_in_every_dump_and_derived_on_load() -> None:
    sync = running()
    assert sync.locked and sync.model_dump()["locked"] is True
    assert '"locked":false' in make_sync().model_dump_json()
    # A stored document's value never wins over the lock holder; one without it loads.
    doc = sync.model_dump(mode="json")
    assert SyncConfiguration.model_validate({**doc, "locked": False}).locked
    del doc["locked"]
    assert SyncConfiguration.model_validate(doc).locked
    assert SyncConfiguration.model_validate_json(make_sync().model_dump_json()).locked is False
