"""``sync.unlock`` and status FAILED on the real stack: commands over Kafka, events and results
read back from their topics, state in Postgres."""

from __future__ import annotations

from typing import Any

import pytest

from events.client import SynclifeClient, new_sync_id
from events.messages import CommandResult, LifecycleEvent
from events.service.app import Service
from statemachine import ErrorCode, Outcome, SyncStatus
from tests.helpers.live import Seen, scheduler_passes

pytestmark = pytest.mark.stack

CREATE: dict[str, Any] = {
    "bucket_id": "bkt_1",
    "connection_id": "conn_1",
    "provider": "s3",
    "source_path": "bucket-a/prefix",
    "created_by_user_id": "u1",
    "polling_interval_seconds": 30,
}


def run_of(result: CommandResult) -> tuple[str, int]:
    assert result.outcome is Outcome.APPLIED, result.error
    assert result.run is not None
    return str(result.run["run_id"]), int(result.run["lock_token"])


async def events_up_to(seen: Seen, sync_id: str, version: int) -> list[tuple[str, LifecycleEvent]]:
    """The sync's events of versions 1..``version`` (waited for), one per version, in order, as
    (type, data) (a redelivered event is counted once)."""
    await seen.wait(sync_id, version)
    by_version = {data.version: (kind, data) for _, kind, data in seen.events(sync_id)}
    assert sorted(by_version)[:version] == list(range(1, version + 1))
    return [by_version[v] for v in range(1, version + 1)]


def latest_version(seen: Seen, sync_id: str) -> int:
    return max(data.version for _, _, data in seen.events(sync_id))


async def test_unlock_releases_a_held_lock_and_the_old_token_is_lock_lost(
    client: SynclifeClient, worker: SynclifeClient, lifecycle: Seen, service: Service
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    started = await worker.run_start(sync_id, worker_id="w-stuck", lease_seconds=600)
    run_id, token = run_of(started)
    assert started.version is not None

    # A run-only key may not unlock (scope syncs:write).
    forbidden = await worker.unlock(sync_id)
    assert forbidden.error is not None and forbidden.error.code is ErrorCode.FORBIDDEN

    unlocked = await client.unlock(sync_id, unlocked_by_user_id="ops", reason="worker hung")
    assert unlocked.outcome is Outcome.APPLIED, unlocked.error
    assert unlocked.version == started.version + 1
    assert unlocked.status is SyncStatus.ACTIVE
    assert unlocked.sync is not None and unlocked.sync.locked is False
    assert unlocked.sync.locked_by_worker_id is None and unlocked.sync.lock_token is None
    assert unlocked.sync.consecutive_failures == 0  # interrupted, not failed

    events = await events_up_to(lifecycle, sync_id, unlocked.version)
    kind, released = events[-1]
    assert kind == "sync.lock_released"
    assert released.version == unlocked.version
    assert released.command_id == unlocked.command_id
    assert (released.actor, released.reason) == ("user:ops", "worker hung")
    assert (released.run_id, released.worker_id) == (run_id, "w-stuck")
    assert released.lock_token is None and released.sync.lock_token is None

    # The old worker's token is lost for every report, and changes nothing. (The scheduler may
    # meanwhile request a new run: the sync is due at once.)
    for report in (
        worker.run_heartbeat(sync_id, run_id=run_id, lock_token=token),
        worker.run_checkpoint(sync_id, run_id=run_id, lock_token=token, files_synced=1),
        worker.run_complete(sync_id, run_id=run_id, lock_token=token),
        worker.run_fail(sync_id, run_id=run_id, lock_token=token, error="late"),
    ):
        late = await report
        assert late.error is not None and late.error.code is ErrorCode.LOCK_LOST, late
        assert late.events == [] and late.version is not None
        assert late.sync is not None and late.sync.lock_token is None

    # Nothing is locked any more: a second unlock is a noop, with no new version.
    again = await client.unlock(sync_id)
    assert again.outcome is Outcome.NOOP and again.events == []

    # The sync is due at once: the scheduler requests a new run, which another worker takes.
    kind, requested = (await events_up_to(lifecycle, sync_id, unlocked.version + 1))[-1]
    assert (kind, requested.actor, requested.trigger) == (
        "sync.run_requested",
        "system",
        "scheduled",
    )
    restarted = await worker.run_start(sync_id, worker_id="w-new", lease_seconds=60)
    assert run_of(restarted)[1] > token


async def test_unlock_of_an_archived_sync_is_refused(client: SynclifeClient) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    await client.archive(sync_id)
    refused = await client.unlock(sync_id)
    assert refused.error is not None and refused.error.code is ErrorCode.INVALID_TRANSITION
    assert refused.error.details["current_status"] == "ARCHIVED"


async def fail_five_times(worker: SynclifeClient, sync_id: str) -> CommandResult:
    result: CommandResult | None = None
    for attempt in range(5):
        run_id, token = run_of(await worker.run_start(sync_id, worker_id="w", lease_seconds=60))
        result = await worker.run_fail(
            sync_id, run_id=run_id, lock_token=token, error=f"403 from the source #{attempt}"
        )
        assert result.outcome is Outcome.APPLIED, result.error
        expected = SyncStatus.FAILED if attempt == 4 else SyncStatus.ACTIVE
        assert result.status is expected, attempt
    assert result is not None
    return result


async def test_initial_only_sync_failing_five_times_goes_failed_and_a_trigger_retries_it(
    client: SynclifeClient, worker: SynclifeClient, lifecycle: Seen, service: Service
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **{**CREATE, "sync_mode": "initial_only"})
    failed = await fail_five_times(worker, sync_id)
    assert failed.sync is not None and failed.version is not None
    s = failed.sync
    assert (s.is_active, s.paused, s.pause_reason) == (False, False, None)
    assert s.consecutive_failures == 5 and s.next_sync_at is None
    assert s.last_error == "403 from the source #4"

    events = await events_up_to(lifecycle, sync_id, failed.version)
    (kind, changed) = events[-1]
    assert kind == "sync.status_changed"
    assert (changed.from_status, changed.to_status) == ("ACTIVE", "FAILED")
    assert (changed.actor, changed.trigger, changed.command_id) == ("system", "failures", None)
    assert events[-2][0] == "sync.run_failed"

    # FAILED is never scheduled, and cannot be paused.
    await scheduler_passes(service)
    assert latest_version(lifecycle, sync_id) == failed.version
    paused = await client.pause(sync_id, paused_by_user_id="u1")
    assert paused.error is not None and paused.error.code is ErrorCode.INVALID_TRANSITION
    assert paused.error.details["current_status"] == "FAILED"
    assert "sync.pause" not in paused.error.details["allowed_commands"]
    assert {"sync.trigger", "sync.resume"} <= set(paused.error.details["allowed_commands"])

    # A trigger makes it PENDING, due at once, failures reset, with its run requested.
    triggered = await client.trigger(sync_id, requested_by_user_id="u2")
    assert triggered.outcome is Outcome.APPLIED, triggered.error
    assert triggered.status is SyncStatus.PENDING
    assert triggered.version == failed.version + 2
    assert triggered.sync is not None and triggered.sync.consecutive_failures == 0
    events = await events_up_to(lifecycle, sync_id, triggered.version)
    (k1, pending), (k2, requested) = events[-2:]
    assert k1 == "sync.status_changed"
    assert (pending.from_status, pending.to_status) == ("FAILED", "PENDING")
    assert pending.sync.next_sync_at == pending.occurred_at  # due at once
    assert k2 == "sync.run_requested" and requested.actor == "user:u2"
    assert requested.command_id == triggered.command_id

    # The retried run can complete: initial_only then COMPLETED as usual.
    run_id, token = run_of(await worker.run_start(sync_id, worker_id="w2", lease_seconds=60))
    done = await worker.run_complete(sync_id, run_id=run_id, lock_token=token, files_synced=4)
    assert done.status is SyncStatus.COMPLETED


async def test_resume_of_a_failed_sync_retries_it_and_cancel_ends_it(
    client: SynclifeClient, worker: SynclifeClient
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **{**CREATE, "sync_mode": "initial_only"})
    await fail_five_times(worker, sync_id)
    resumed = await client.resume(sync_id)
    assert resumed.status is SyncStatus.PENDING and resumed.sync is not None
    assert resumed.sync.consecutive_failures == 0
    canceled = await client.cancel(sync_id, reason="give up")
    assert canceled.status is SyncStatus.CANCELED

    other = new_sync_id()
    await client.create(other, **{**CREATE, "sync_mode": "initial_only"})
    await fail_five_times(worker, other)
    archived = await client.archive(other)
    assert archived.status is SyncStatus.ARCHIVED
