"""Runs as jobs: each requested run is a job ``job_`` + ULID, and the rules that name them.

A job is requested (``running``, phase ``queued``), started by a worker (phase ``running``), then
``completed``, ``failed`` or ``interrupted`` (unlock, lease expiry, cancel, archive). At most one
job per sync is queued: a run requested again before a worker started it names the same job.
The decider declares each job's state after a change as a ``JobEffect`` on that change; the
service writes it in the change's transaction.

Job ids are derived, not drawn: ``decide`` is pure (the same sync, command and time give the
same decision, which replays, the stateful tests and the reference model rely on), so the id
cannot come from a random source. A ULID's 48-bit time is the change's time in milliseconds and
its 80 "random" bits are the first 80 bits of ``sha256(sync_config_id:version)``, where
``version`` is the version of the change that creates the job: a sync's versions are gap-free
and each is written once, so no two jobs share the pair, and the ids still sort by time.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, Final

from statemachine.changes import SYSTEM_ACTOR, Changes
from statemachine.decision import EventType, JobEffect, JobPhase, JobStatus, JobTrigger
from statemachine.errors import CommandError
from statemachine.model import MAX_LAST_ERROR, SyncConfiguration
from statemachine.status import SyncStatus

__all__ = [
    "JOB_PREFIX",
    "after_release",
    "checkpoint_of",
    "finished",
    "interrupted",
    "job_id",
    "progress",
    "request_run",
    "start_fields",
]

JOB_PREFIX: Final = "job_"
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SCHEDULABLE: Final = frozenset({SyncStatus.PENDING, SyncStatus.ACTIVE})


def job_id(sync_config_id: str, version: int, at: datetime) -> str:
    """``job_`` + a ULID (26 Crockford base-32 characters) derived from the creating change."""
    millis = int(at.timestamp() * 1000) & ((1 << 48) - 1)
    digest = hashlib.sha256(f"{sync_config_id}:{version}".encode()).digest()
    value = (millis << 80) | int.from_bytes(digest[:10], "big")
    return JOB_PREFIX + "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def checkpoint_of(sync: SyncConfiguration, full: bool = False) -> dict[str, Any]:
    """Where the next run resumes (empty when resuming is off, for a full run, or unsaved)."""
    if full or not sync.resume_enabled:
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


def request_run(
    ch: Changes, by: str, trigger: JobTrigger = JobTrigger.MANUAL, *, full: bool = False
) -> CommandError | None:
    """A run is due: name its job (the queued one if any), say where it starts from, and
    re-request after an interval. A full run asked for earlier (``pending_full_sync``, or a
    queued full job) stays full. ``full_sync`` says the run lists every file: asked for, or
    the sync never completed a run (``modified_since`` null either way); only a full run asked
    for drops the resume checkpoint."""
    sync = ch.sync
    queued = sync.queued_sync_job_id
    full = full or sync.pending_full_sync or (queued is not None and sync.queued_full_sync)
    job = queued or job_id(sync.sync_config_id, sync.version + 1, ch.now)
    effect = JobEffect(
        sync_job_id=job,
        status=JobStatus.RUNNING,
        phase=JobPhase.QUEUED,
        trigger=trigger,
        full_sync=full or sync.last_sync_at is None,
    )
    return ch.add(
        EventType.RUN_REQUESTED,
        {
            "run_requested_at": ch.now,
            "next_sync_at": ch.now + timedelta(seconds=sync.polling_interval_seconds),
            "queued_sync_job_id": job,
            "queued_full_sync": full,
        },
        actor=by,
        trigger=trigger.value,
        system=by == SYSTEM_ACTOR,
        jobs=(effect,),
        modified_since=None if full else sync.last_sync_at,
        checkpoint=checkpoint_of(sync, full),
        sync_job_id=job,
        full_sync=effect.full_sync,
    )


def start_fields(
    sync: SyncConfiguration, version: int, now: datetime
) -> tuple[str, bool, dict[str, Any], JobEffect]:
    """The job a run start takes (the queued one, else a new ``manual`` job), whether a full
    run was asked for, the fields of the sync that say so, and the job's state once started."""
    queued = sync.queued_sync_job_id
    job = queued or job_id(sync.sync_config_id, version, now)
    full = sync.pending_full_sync or (queued is not None and sync.queued_full_sync)
    fields: dict[str, Any] = {
        "current_sync_run_id": job,
        "queued_sync_job_id": None,
        "queued_full_sync": False,
        "current_full_sync": full,
    }
    if full:
        fields.update(checkpoint_of(sync, full=True))
    effect = JobEffect(
        sync_job_id=job,
        status=JobStatus.RUNNING,
        phase=JobPhase.RUNNING,
        trigger=None if queued else JobTrigger.MANUAL,
        full_sync=full or sync.last_sync_at is None,
        started_at=now,
    )
    return job, full, fields, effect


def _run_job(sync: SyncConfiguration) -> str | None:
    """The job of the run holding the lock (None: no run, or a v1 run with a UUID id)."""
    run = sync.current_sync_run_id
    return run if sync.lock_token is not None and run and run.startswith(JOB_PREFIX) else None


def progress(sync: SyncConfiguration, fields: dict[str, Any]) -> tuple[JobEffect, ...]:
    """The running job's state after a checkpoint writing ``fields`` to ``sync``."""
    job = _run_job(sync)
    if job is None:
        return ()
    run = fields.get("current_run", sync.current_run)
    return (
        JobEffect(
            sync_job_id=job,
            status=JobStatus.RUNNING,
            phase=JobPhase.RUNNING,
            files_synced=run.files_synced,
            files_failed=run.files_failed,
            current_cursor=fields.get("resume_cursor", sync.resume_cursor),
            started_at=sync.locked_at,
        ),
    )


def finished(
    sync: SyncConfiguration,
    status: JobStatus,
    now: datetime,
    fields: dict[str, Any] | None = None,
    error: str | None = None,
) -> tuple[JobEffect, ...]:
    """The running job's final state when the change writing ``fields`` ends its run."""
    job = _run_job(sync)
    if job is None:
        return ()
    run = (fields or {}).get("current_run", sync.current_run)
    return (
        JobEffect(
            sync_job_id=job,
            status=status,
            phase=None,
            files_synced=run.files_synced,
            files_failed=run.files_failed,
            error=error[:MAX_LAST_ERROR] if error is not None else None,
            current_cursor=sync.resume_cursor,
            started_at=sync.locked_at,
            completed_at=now,
        ),
    )


def interrupted(
    sync: SyncConfiguration, now: datetime, error: str | None = None
) -> tuple[JobEffect, ...]:
    """Cancel or archive: the running job and the queued one end ``interrupted``."""
    effects = finished(sync, JobStatus.INTERRUPTED, now, error=error)
    if sync.queued_sync_job_id is not None:
        effects += (
            JobEffect(
                sync_job_id=sync.queued_sync_job_id,
                status=JobStatus.INTERRUPTED,
                phase=None,
                full_sync=sync.queued_full_sync,
                error=error[:MAX_LAST_ERROR] if error is not None else None,
                completed_at=now,
            ),
        )
    return effects


def after_release(ch: Changes, by: str) -> CommandError | None:
    """After a change released the run lock: a full run asked for while it was held
    (``pending_full_sync``) is requested now if the sync is scheduled; a paused sync keeps
    it for its next run. The released run was that full run (it failed, expired or was
    unlocked: a completed one cleared the flag): nothing now, the next run is full."""
    sync = ch.sync
    if not sync.pending_full_sync or sync.lock_token is not None or ch.before.current_full_sync:
        return None
    if sync.status not in _SCHEDULABLE:
        return None
    return request_run(ch, by, JobTrigger.MANUAL, full=True)
