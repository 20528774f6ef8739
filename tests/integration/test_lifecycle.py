"""The whole lifecycle on the real stack: schedule, run lock, checkpoints, failures, completion.

The service's clock is a ``Clock`` the tests move forward, so a 30 s polling interval passes
in an instant and nothing sleeps for minutes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from events.client import SynclifeClient, new_sync_id
from events.messages import CommandResult
from events.service.app import Service
from statemachine import ErrorCode, Outcome, SyncStatus
from tests.helpers.live import Clock, Seen, scheduler_passes

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


def of_type(seen: Seen, sync_id: str, kind: str) -> list[Any]:
    return [e[2] for e in seen.events(sync_id) if e[1] == kind]


async def wait_event(
    seen: Seen, sync_id: str, kind: str, count: int, timeout: float = 10
) -> list[Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(found := of_type(seen, sync_id, kind)) < count:
        assert loop.time() < deadline, f"{kind}: {len(found)} of {count}"
        seen.changed.clear()
        try:
            await asyncio.wait_for(seen.changed.wait(), max(0.01, deadline - loop.time()))
        except TimeoutError:
            pass
    return found


def gap_free(seen: Seen, sync_id: str) -> None:
    versions = [e[2].version for e in seen.events(sync_id)]
    assert versions == list(range(1, len(versions) + 1))


async def test_continuous_sync_polls_pauses_and_resumes_incrementally(
    client: SynclifeClient, worker: SynclifeClient, lifecycle: Seen, service: Service, clock: Clock
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    # PENDING is due at once: the first run is a full one.
    (first,) = await wait_event(lifecycle, sync_id, "sync.run_requested", 1)
    assert first.modified_since is None and first.actor == "system" and first.command_id is None

    started = await worker.run_start(sync_id, worker_id="w1", lease_seconds=60)
    assert started.status is SyncStatus.ACTIVE
    run_id, token = run_of(started)
    done = await worker.run_complete(
        sync_id,
        run_id=run_id,
        lock_token=token,
        files_discovered=10,
        files_synced=9,
        files_failed=1,
        bytes_synced=1234,
        batch_ids=["b1"],
        task_ids=["t1"],
    )
    assert done.outcome is Outcome.APPLIED and done.sync is not None
    s = done.sync
    assert (s.total_files_synced, s.total_files_failed, s.total_bytes_synced) == (9, 1, 1234)
    assert s.locked_by_worker_id is None and s.lock_token is None
    assert s.last_sync_at == started.sync.locked_at if started.sync else False
    assert s.next_sync_at is not None and s.batch_ids == ["b1"] and s.sync_run_counter == 1

    # Nothing more is due until the interval passes; then an incremental run is requested.
    await scheduler_passes(service)
    assert len(of_type(lifecycle, sync_id, "sync.run_requested")) == 1
    clock.advance(31)
    (_, second) = await wait_event(lifecycle, sync_id, "sync.run_requested", 2)
    assert second.modified_since == s.last_sync_at

    # Paused: no run is requested, however long it stays paused.
    paused = await client.pause(sync_id, paused_by_user_id="u1")
    assert paused.status is SyncStatus.SUSPENDED
    clock.advance(3600)
    await scheduler_passes(service, 3)
    assert len(of_type(lifecycle, sync_id, "sync.run_requested")) == 2

    # Resumed: a run is due at once, incremental from the last successful sync.
    resumed = await client.resume(sync_id)
    assert resumed.status is SyncStatus.ACTIVE
    third = (await wait_event(lifecycle, sync_id, "sync.run_requested", 3))[2]
    assert third.modified_since == s.last_sync_at and third.command_id == resumed.command_id
    assert resumed.version is not None
    await lifecycle.wait(sync_id, resumed.version)
    gap_free(lifecycle, sync_id)


async def test_two_workers_race_and_one_wins(
    client: SynclifeClient, worker: SynclifeClient
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    a, b = await asyncio.gather(
        worker.run_start(sync_id, worker_id="wa", lease_seconds=60),
        worker.run_start(sync_id, worker_id="wb", lease_seconds=60),
    )
    outcomes = sorted([a.outcome.value, b.outcome.value])
    assert outcomes == ["applied", "rejected"]
    loser = a if a.outcome is Outcome.REJECTED else b
    winner = b if loser is a else a
    assert loser.error is not None and loser.error.code is ErrorCode.LOCK_CONFLICT
    assert winner.sync is not None
    assert loser.error.details["locked_by_worker_id"] == winner.sync.locked_by_worker_id


async def test_expired_lease_is_taken_back_and_counted(
    client: SynclifeClient, worker: SynclifeClient, lifecycle: Seen, clock: Clock
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    started = await worker.run_start(sync_id, worker_id="w-dies", lease_seconds=10)
    run_id, token = run_of(started)
    clock.advance(11)
    (expired,) = await wait_event(lifecycle, sync_id, "sync.lock_expired", 1)
    assert expired.actor == "system" and expired.command_id is None
    assert expired.sync.locked_by_worker_id is None and expired.sync.consecutive_failures == 1
    assert "w-dies" in (expired.sync.last_error or "")
    # The old worker's report is stale now, and changes nothing.
    late = await worker.run_complete(sync_id, run_id=run_id, lock_token=token)
    assert late.error is not None and late.error.code is ErrorCode.LOCK_LOST
    assert late.version == expired.version
    # Another worker can take the lock; its token is larger.
    again = await worker.run_start(sync_id, worker_id="w2", lease_seconds=60)
    assert run_of(again)[1] > token


async def test_five_failures_auto_suspend_and_resume_clears(
    client: SynclifeClient, worker: SynclifeClient, lifecycle: Seen
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    result = None
    for attempt in range(5):
        run_id, token = run_of(await worker.run_start(sync_id, worker_id="w", lease_seconds=60))
        result = await worker.run_fail(
            sync_id, run_id=run_id, lock_token=token, error=f"source unreachable #{attempt}"
        )
        assert result.outcome is Outcome.APPLIED
        expected = SyncStatus.SUSPENDED if attempt == 4 else SyncStatus.ACTIVE
        assert result.status is expected, attempt
    assert result is not None and result.sync is not None
    s = result.sync
    assert s.paused and s.paused_by_user_id == "system" and s.consecutive_failures == 5
    assert s.pause_reason is not None and "source unreachable #4" in s.pause_reason
    assert result.version is not None
    await lifecycle.wait(sync_id, result.version)
    suspend = of_type(lifecycle, sync_id, "sync.status_changed")[-1]
    assert (suspend.to_status, suspend.actor, suspend.command_id) == ("SUSPENDED", "system", None)
    resumed = await client.resume(sync_id)
    assert resumed.sync is not None and resumed.sync.consecutive_failures == 0
    assert resumed.status is SyncStatus.ACTIVE


async def test_initial_only_sync_completes_and_is_never_requested_again(
    client: SynclifeClient, worker: SynclifeClient, lifecycle: Seen, service: Service, clock: Clock
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **{**CREATE, "sync_mode": "initial_only"})
    await wait_event(lifecycle, sync_id, "sync.run_requested", 1)
    run_id, token = run_of(await worker.run_start(sync_id, worker_id="w", lease_seconds=60))
    checkpoint = await worker.run_checkpoint(
        sync_id,
        run_id=run_id,
        lock_token=token,
        resume_cursor="page-7",
        resume_objects_processed=700,
        files_synced=700,
    )
    assert checkpoint.sync is not None and checkpoint.sync.resume_cursor == "page-7"
    done = await worker.run_complete(sync_id, run_id=run_id, lock_token=token, files_synced=1000)
    assert done.status is SyncStatus.COMPLETED and done.sync is not None
    # The checkpoint's 700 plus the 300 the checkpoint had not reported: counted once.
    assert done.sync.total_files_synced == 1000 and done.sync.next_sync_at is None
    clock.advance(3600)
    await scheduler_passes(service, 3)
    assert len(of_type(lifecycle, sync_id, "sync.run_requested")) == 1
    resumed = await client.resume(sync_id)
    assert resumed.error is not None and resumed.error.code is ErrorCode.INVALID_TRANSITION


async def test_stale_token_is_lock_lost_and_changes_nothing(
    client: SynclifeClient, worker: SynclifeClient
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    started = await worker.run_start(sync_id, worker_id="w", lease_seconds=60)
    run_id, token = run_of(started)
    for bad in (
        {"run_id": run_id, "lock_token": token + 1},
        {"run_id": "00000000-0000-0000-0000-000000000000", "lock_token": token},
    ):
        result = await worker.run_heartbeat(sync_id, **bad)
        assert result.error is not None and result.error.code is ErrorCode.LOCK_LOST
        assert result.version == started.version


async def test_heartbeat_tells_a_worker_to_stop_after_pause(
    client: SynclifeClient, worker: SynclifeClient
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    run_id, token = run_of(await worker.run_start(sync_id, worker_id="w", lease_seconds=60))
    beat = await worker.run_heartbeat(sync_id, run_id=run_id, lock_token=token, lease_seconds=120)
    assert beat.run is not None and beat.run["stop_requested"] is False
    await client.pause(sync_id, paused_by_user_id="u1", reason="maintenance")
    beat = await worker.run_heartbeat(sync_id, run_id=run_id, lock_token=token)
    assert beat.run is not None and beat.run["stop_requested"] is True
    # A run in progress may finish while paused; the sync stays paused.
    done = await worker.run_complete(sync_id, run_id=run_id, lock_token=token, files_synced=3)
    assert done.status is SyncStatus.SUSPENDED and done.sync is not None
    assert done.sync.lock_token is None and done.sync.total_files_synced == 3


async def test_run_only_key_cannot_pause_and_write_key_cannot_run(
    client: SynclifeClient, worker: SynclifeClient
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    paused = await worker.pause(sync_id, paused_by_user_id="u1")
    assert paused.error is not None and paused.error.code is ErrorCode.FORBIDDEN
    started = await client.run_start(sync_id, worker_id="w")
    assert started.error is not None and started.error.code is ErrorCode.FORBIDDEN


async def test_trigger_requests_a_run_now_and_draft_needs_activation(
    client: SynclifeClient, lifecycle: Seen, service: Service
) -> None:
    sync_id = new_sync_id()
    draft = await client.create(sync_id, **{**CREATE, "initial_status": "DRAFT"})
    assert draft.status is SyncStatus.DRAFT
    await scheduler_passes(service)
    assert of_type(lifecycle, sync_id, "sync.run_requested") == []
    refused = await client.trigger(sync_id)
    assert refused.error is not None and refused.error.code is ErrorCode.INVALID_TRANSITION
    activated = await client.activate(sync_id)
    assert activated.status is SyncStatus.PENDING
    await wait_event(lifecycle, sync_id, "sync.run_requested", 1)
    triggered = await client.trigger(sync_id, requested_by_user_id="u1")
    assert triggered.outcome is Outcome.APPLIED
    requests = await wait_event(lifecycle, sync_id, "sync.run_requested", 2)
    assert requests[1].command_id == triggered.command_id and requests[1].actor == "user:u1"
