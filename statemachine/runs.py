"""The run and lease rules: requesting a run, taking the run lock, the lock holder's reports,
failures (backoff, auto-suspend, FAILED), expired leases, unlock, and the retry of a FAILED sync.

``apply_run`` is what ``decide`` does with a run command once the table allowed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from statemachine.changes import (
    LOCK_RELEASED,
    PAUSE_CLEARED,
    SYSTEM_ACTOR,
    Changes,
    actor,
    reject,
    status_fields,
)
from statemachine.commands import (
    Command,
    RunCheckpointData,
    RunCompleteData,
    RunFailData,
    RunHeartbeatData,
    RunStartData,
    SystemData,
    SystemTrigger,
    TriggerData,
    UnlockData,
)
from statemachine.decision import Decision, EventType, JobStatus, JobTrigger, Outcome
from statemachine.errors import CommandError, ErrorCode, bounded
from statemachine.holds import FAILURES_HOLD, hold_fields
from statemachine.jobs import (
    after_release,
    checkpoint_of,
    finished,
    progress,
    request_run,
    start_fields,
)
from statemachine.model import (
    MAX_HOLDS,
    MAX_LAST_ERROR,
    MAX_TRACKED_IDS,
    PauseHold,
    RunMetrics,
    SyncConfiguration,
    SyncMode,
)
from statemachine.status import RunStatus, SyncStatus

__all__ = [
    "DEFAULT_POLICY",
    "Policy",
    "apply_run",
    "fails_out",
    "request_run",
    "retry_failed",
    "system_command",
]

S = SyncStatus


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


def fails_out(sync: SyncConfiguration, policy: Policy) -> bool:
    """One more failure reaches the auto-suspend threshold (the table's ``fails_out``)."""
    return sync.consecutive_failures + 1 >= policy.max_consecutive_failures


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


def _run_info(sync: SyncConfiguration) -> dict[str, Any]:
    return {
        "run_id": str(sync.current_sync_run_id) if sync.current_sync_run_id else None,
        "lock_token": sync.lock_token,
        "lease_expires_at": sync.lock_expires_at.isoformat() if sync.lock_expires_at else None,
        "stop_requested": sync.status is not S.ACTIVE,
    }


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
        return reject(
            ErrorCode.LOCK_LOST,
            "this worker no longer holds the run lock (stale run id or lock token)",
            sync,
            {"current_run_id": str(sync.current_sync_run_id) if sync.current_sync_run_id else None},
        )
    return None


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


def _failure(
    ch: Changes,
    policy: Policy,
    dest: SyncStatus,
    error: str,
    event_type: EventType,
    by: str,
    reason: str | None,
    **extra: Any,
) -> CommandError | None:
    """A failed run (reported, or its lease expired): count it, back off; at the threshold a
    continuous sync is auto-suspended (``dest`` SUSPENDED), an initial_only one FAILED.

    A sync paused while its run went on (SUSPENDED already, ``dest`` its own status) keeps its
    holds: at the threshold a continuous one gains the hold ``system:failures`` beside them
    (``sync.holds_changed``), so that releasing the others does not start it again."""
    sync = ch.sync
    failures = sync.consecutive_failures + 1
    last_error = error[:MAX_LAST_ERROR]
    fields: dict[str, Any] = {
        **LOCK_RELEASED,
        "consecutive_failures": failures,
        "last_error": last_error,
        "last_run_status": RunStatus.FAILED,
        "next_sync_at": ch.now + policy.retry_delay(failures),
    }
    # A lease that ran out interrupts the job; a reported failure fails it.
    ended = JobStatus.INTERRUPTED if event_type is EventType.LOCK_EXPIRED else JobStatus.FAILED
    problem = ch.add(
        event_type,
        fields,
        actor=by,
        reason=reason,
        system=by == SYSTEM_ACTOR,
        jobs=finished(sync, ended, ch.now, fields, last_error),
        run_id=str(sync.current_sync_run_id),
        error=last_error,
        **extra,
    )
    if problem:
        return problem
    if dest is sync.status:  # no transition: below the threshold, or paused meanwhile
        return _failures_hold(ch, policy, failures, last_error) or after_release(ch, by)
    if dest not in (S.SUSPENDED, S.FAILED):
        return after_release(ch, by)
    if dest is S.FAILED:
        failed_reason = f"failed after {failures} consecutive failures: {last_error}"
        return ch.add(
            EventType.STATUS_CHANGED,
            {**status_fields(S.FAILED), "next_sync_at": None},
            actor=SYSTEM_ACTOR,
            reason=failed_reason[:MAX_LAST_ERROR],
            trigger="failures",
            system=True,
        )
    return _suspend_for_failures(ch, failures, last_error)


def _failures_hold(
    ch: Changes, policy: Policy, failures: int, last_error: str
) -> CommandError | None:
    """A paused continuous sync's run failed for the threshold's time: ``system:failures``
    joins its holds (the status stays SUSPENDED). Not past ``MAX_HOLDS``: the sync is held
    anyway, and a failure must never be refused."""
    sync = ch.sync
    if (
        sync.status is not S.SUSPENDED
        or sync.sync_mode is not SyncMode.CONTINUOUS
        or failures < policy.max_consecutive_failures
        or len(sync.pause_holds) >= MAX_HOLDS
        or any(h.hold == FAILURES_HOLD for h in sync.pause_holds)
    ):
        return None
    return _suspend_for_failures(ch, failures, last_error)


def _suspend_for_failures(ch: Changes, failures: int, last_error: str) -> CommandError | None:
    """The hold ``system:failures`` beside the sync's holds: SUSPENDED from now
    (``sync.status_changed``), or a change of holds if it was paused already."""
    reason = f"auto-suspended after {failures} consecutive failures: {last_error}"
    hold = PauseHold(
        hold=FAILURES_HOLD,
        reason=reason[:MAX_LAST_ERROR],
        paused_at=ch.now,
        paused_by_user_id=SYSTEM_ACTOR,
    )
    paused = ch.sync.status is S.SUSPENDED
    return ch.add(
        EventType.HOLDS_CHANGED if paused else EventType.STATUS_CHANGED,
        {**status_fields(S.SUSPENDED), **hold_fields([*ch.sync.pause_holds, hold])},
        actor=SYSTEM_ACTOR,
        reason=hold.reason,
        trigger="auto_suspend",
        system=True,
    )


def _unlock(ch: Changes, by: str, reason: str | None) -> CommandError | None:
    """``sync.unlock``: release the run lock. The run is interrupted, not failed (no failure
    is counted); its token is ``lock_lost`` from now on; a scheduled sync is due at once."""
    sync = ch.sync
    fields: dict[str, Any] = {**LOCK_RELEASED, "last_run_status": None}
    if sync.status in (S.PENDING, S.ACTIVE):
        fields["next_sync_at"] = ch.now
    problem = ch.add(
        EventType.LOCK_RELEASED,
        fields,
        actor=by,
        reason=reason,
        jobs=finished(sync, JobStatus.INTERRUPTED, ch.now, error=reason or "unlocked"),
        run_id=str(sync.current_sync_run_id) if sync.current_sync_run_id else None,
        worker_id=sync.locked_by_worker_id,
    )
    return problem or after_release(ch, by)


def retry_failed(
    ch: Changes, by: str, trigger: JobTrigger = JobTrigger.MANUAL, *, full: bool = False
) -> CommandError | None:
    """``sync.trigger`` or ``sync.resume`` of a FAILED sync: PENDING, due at once, failures
    forgotten, and its run requested now (as a trigger of a PENDING sync does), as a job of
    ``trigger`` (``manual`` for a trigger, ``resume`` for a resume)."""
    problem = ch.add(
        EventType.UPDATED,
        {**status_fields(S.PENDING), "next_sync_at": ch.now, "consecutive_failures": 0},
        actor=by,
    )
    return problem or request_run(ch, by, trigger, full=full)


def _start(ch: Changes, command: Command, data: RunStartData, dest: SyncStatus) -> Decision:
    """Take the run lock, unless another worker holds it (or its lease is being taken back)."""
    sync, now = ch.sync, ch.now
    if sync.lock_token is not None:
        # Held, or expired and not yet taken back: the scheduler is the one place a lease
        # expires (and counts as a failed run); the worker retries after it.
        expired = sync.lock_expires_at is not None and sync.lock_expires_at <= now
        holder = bounded(sync.locked_by_worker_id or "")  # a worker's id: text from a message
        return reject(
            ErrorCode.LOCK_CONFLICT,
            f"the run lock is held by worker {holder}"
            + ("; its lease expired and is being taken back" if expired else ""),
            sync,
            {
                "locked_by_worker_id": holder,
                "lock_expires_at": (
                    sync.lock_expires_at.isoformat() if sync.lock_expires_at else None
                ),
                "lease_expired": expired,
            },
        )
    if data.sync_job_id is not None and data.sync_job_id != sync.queued_sync_job_id:
        queued = sync.queued_sync_job_id
        return reject(
            ErrorCode.VALIDATION_ERROR,
            f"job {bounded(data.sync_job_id)} is not queued for this sync"
            + (f" (the queued job is {queued})" if queued else " (no job is queued)"),
            sync,
            {
                "errors": [{"field": "sync_job_id", "problem": "not the queued job of this sync"}],
                "queued_sync_job_id": queued,
            },
        )
    counter = sync.sync_run_counter + 1
    run_id, full, job_fields, job = start_fields(sync, sync.version + 1, now)
    fresh = {} if sync.resume_enabled else {"resume_cursor": None, "resume_last_primary_key": None}
    problem = ch.add(
        EventType.RUN_STARTED,
        {
            **status_fields(dest),
            **fresh,
            **job_fields,
            "locked_by_worker_id": data.worker_id,
            "locked_at": now,
            "lock_expires_at": now + timedelta(seconds=data.lease_seconds),
            "lock_token": counter,
            "sync_run_counter": counter,
            "current_run": RunMetrics(),
            "last_run_status": RunStatus.IN_PROGRESS,
            "next_sync_at": None,
        },
        actor=f"worker:{data.worker_id}",
        jobs=(job,),
        run_id=run_id,
        worker_id=data.worker_id,
        lock_token=counter,
        modified_since=None if full else sync.last_sync_at,
        checkpoint=checkpoint_of(sync, full),
        sync_job_id=run_id,
        full_sync=job.full_sync,
    )
    return ch.result(problem, _run_info(ch.sync))


def _complete(ch: Changes, data: RunCompleteData, dest: SyncStatus) -> CommandError | None:
    """The run finished: add what checkpoints did not report, release the lock, plan the next."""
    sync, now = ch.sync, ch.now
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
        **LOCK_RELEASED,
        **status_fields(dest),
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
            RunStatus.COMPLETED_WITH_ERRORS if run_totals.files_failed else RunStatus.COMPLETED
        ),
        resume_cursor=None,
        resume_last_primary_key=None,
        resume_objects_processed=(
            data.objects_processed
            if data.objects_processed is not None
            else sync.resume_objects_processed
        ),
        next_sync_at=(
            None if dest is S.COMPLETED else now + timedelta(seconds=sync.polling_interval_seconds)
        ),
    )
    if dest is S.COMPLETED:
        fields.update(PAUSE_CLEARED)
    if sync.current_full_sync:  # the full run asked for is done
        fields["pending_full_sync"] = False
    by = f"worker:{sync.locked_by_worker_id}"
    problem = ch.add(
        EventType.RUN_COMPLETED,
        fields,
        actor=by,
        jobs=finished(sync, JobStatus.COMPLETED, now, fields),
        run_id=str(data.run_id),
        run_totals=run_totals.model_dump(),
    )
    return problem or after_release(ch, by)


def apply_run(
    ch: Changes, command: Command, data: Any, dest: SyncStatus, policy: Policy
) -> Decision:
    """What a run command the table allowed does to ``ch.sync`` (moving it to ``dest``)."""
    sync, now = ch.sync, ch.now
    match data:
        case TriggerData():
            by, full = actor(command, data.requested_by_user_id), data.mode == "full"
            if sync.lock_token is not None:
                if not full or sync.pending_full_sync or sync.current_full_sync:
                    return Decision(outcome=Outcome.NOOP, sync=sync, run=_run_info(sync))
                # A full run while one holds the lock: requested when the lock is released.
                problem = ch.add(EventType.UPDATED, {"pending_full_sync": True}, actor=by)
                return ch.result(problem, _run_info(ch.sync))
            return ch.result(request_run(ch, by, JobTrigger.MANUAL, full=full))
        case SystemData() if command.type is SystemTrigger.REQUEST_RUN:
            if sync.lock_token is not None or (
                sync.next_sync_at is None or sync.next_sync_at > now
            ):
                return Decision(outcome=Outcome.NOOP, sync=sync)
            return ch.result(request_run(ch, SYSTEM_ACTOR, JobTrigger.SCHEDULED))
        case SystemData() if command.type is SystemTrigger.LOCK_EXPIRED:
            if sync.lock_expires_at is None or sync.lock_expires_at > now:
                return Decision(outcome=Outcome.NOOP, sync=sync)
            problem = _failure(
                ch,
                policy,
                dest,
                f"the lease of worker {sync.locked_by_worker_id} expired",
                EventType.LOCK_EXPIRED,
                SYSTEM_ACTOR,
                "lease expired",
                worker_id=sync.locked_by_worker_id,
            )
            return ch.result(problem)
        case UnlockData():
            if sync.lock_token is None:
                return Decision(outcome=Outcome.NOOP, sync=sync)
            return ch.result(_unlock(ch, actor(command, data.unlocked_by_user_id), data.reason))
        case RunStartData():
            return _start(ch, command, data, dest)
        case RunHeartbeatData():
            if (stale := _lock_check(sync, data)) is not None:
                return stale
            problem = ch.add(
                EventType.LEASE_EXTENDED,
                {"lock_expires_at": now + timedelta(seconds=data.lease_seconds)},
                actor=f"worker:{sync.locked_by_worker_id}",
                run_id=str(data.run_id),
            )
            return ch.result(problem, _run_info(ch.sync))
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
                jobs=progress(sync, fields),
                run_id=str(data.run_id),
            )
            return ch.result(problem, _run_info(ch.sync))
        case RunCompleteData():
            if (stale := _lock_check(sync, data)) is not None:
                return stale
            return ch.result(_complete(ch, data, dest))
        case RunFailData():
            if (stale := _lock_check(sync, data)) is not None:
                return stale
            problem = _failure(
                ch,
                policy,
                dest,
                data.error,
                EventType.RUN_FAILED,
                f"worker:{sync.locked_by_worker_id}",
                None,
            )
            return ch.result(problem)
        case _:  # pragma: no cover - parse_data only builds the types above
            raise TypeError(f"no effect defined for {command.type.value}")
