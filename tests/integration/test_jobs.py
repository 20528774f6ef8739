"""Runs as jobs, and the v1.1 lifecycle additions, on the real stack: the ``sync_jobs`` rows
follow a run from its request to its end, in the transaction of each change; an update with
``is_active`` false is a pause as a second version; a create without provider or user."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from events.client import SynclifeClient, new_sync_id
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import create_key
from statemachine import CommandType, Outcome, SyncStatus
from tests.helpers.live import Seen, Tenant
from tests.integration.test_lifecycle import wait_event

pytestmark = pytest.mark.stack

CREATE: dict[str, Any] = {
    "bucket_id": "bkt_jobs",
    "connection_id": "conn_1",
    "provider": "s3",
    "source_path": "bucket-a/prefix",
    "created_by_user_id": "u1",
    "polling_interval_seconds": 30,
}


async def job_row(settings: Settings, job_id: str) -> asyncpg.Record:
    conn = await connect(settings)
    try:
        row = await conn.fetchrow("SELECT * FROM sync_jobs WHERE sync_job_id = $1", job_id)
    finally:
        await conn.close()
    assert row is not None, job_id
    return row


async def test_job_rows_follow_a_run_from_request_to_completion(
    settings: Settings, client: SynclifeClient, worker: SynclifeClient, lifecycle: Seen
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    # A PENDING sync is due at once: the scheduler requests its first run, a job.
    (requested,) = await wait_event(lifecycle, sync_id, "sync.run_requested", 1)
    job = requested.sync_job_id
    assert job is not None and job.startswith("job_") and len(job) == 30
    assert requested.trigger == "scheduled" and requested.full_sync is True
    assert requested.sync.queued_sync_job_id == job
    row = await job_row(settings, job)
    assert (row["status"], row["phase"], row["trigger"], row["full_sync"]) == (
        "running",
        "queued",
        "scheduled",
        True,
    )
    assert row["sync_config_id"] == sync_id and row["started_at"] is None

    # Another worker's start naming a job that is not queued is refused, clearly.
    wrong = await worker.send(
        CommandType.RUN_START, sync_id, {"worker_id": "w0", "sync_job_id": "job_nope"}
    )
    assert wrong is not None and wrong.outcome is Outcome.REJECTED
    assert wrong.error is not None and wrong.error.details["queued_sync_job_id"] == job

    started = await worker.send(
        CommandType.RUN_START, sync_id, {"worker_id": "w1", "sync_job_id": job}
    )
    assert started is not None and started.outcome is Outcome.APPLIED, started
    assert started.run is not None and started.run["run_id"] == job
    assert started.sync is not None and started.sync.current_sync_run_id == job
    assert started.sync.locked and started.sync.queued_sync_job_id is None
    token = started.run["lock_token"]
    row = await job_row(settings, job)
    assert (row["status"], row["phase"]) == ("running", "running")
    assert row["started_at"] is not None

    await worker.run_checkpoint(
        sync_id, run_id=job, lock_token=token, files_synced=3, resume_cursor="page-2"
    )
    row = await job_row(settings, job)
    assert (row["files_synced"], row["current_cursor"], row["phase"]) == (3, "page-2", "running")

    done = await worker.run_complete(
        sync_id, run_id=job, lock_token=token, files_synced=5, files_failed=1
    )
    assert done.outcome is Outcome.APPLIED and done.sync is not None
    assert not done.sync.locked
    row = await job_row(settings, job)
    assert (row["status"], row["phase"], row["files_synced"], row["files_failed"]) == (
        "completed",
        None,
        5,
        1,
    )
    assert row["completed_at"] is not None and row["completed_at"] >= row["started_at"]

    # A manual trigger is a new job, named in its result and its event.
    triggered = await client.trigger(sync_id)
    assert triggered.outcome is Outcome.APPLIED
    assert triggered.sync_job_id is not None and triggered.sync_job_id != job
    row = await job_row(settings, triggered.sync_job_id)
    assert (row["trigger"], row["phase"], row["full_sync"]) == ("manual", "queued", False)


async def test_full_trigger_while_locked_requests_the_full_run_at_release(
    settings: Settings, client: SynclifeClient, worker: SynclifeClient, lifecycle: Seen
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    await wait_event(lifecycle, sync_id, "sync.run_requested", 1)
    started = await worker.run_start(sync_id, worker_id="w1")
    assert started.run is not None
    run_id, token = started.run["run_id"], started.run["lock_token"]

    full = await client.trigger(sync_id, mode="full")
    assert full.outcome is Outcome.APPLIED and full.sync_job_id is None
    assert full.sync is not None and full.sync.pending_full_sync

    await worker.run_fail(sync_id, run_id=run_id, lock_token=token, error="x" * 2000)
    assert (await job_row(settings, run_id))["error"] == "x" * 1000
    requested = await wait_event(lifecycle, sync_id, "sync.run_requested", 2)
    last = requested[-1]
    assert last.full_sync is True and last.modified_since is None and last.trigger == "manual"
    assert last.sync.pending_full_sync  # until the full run completes
    assert (await job_row(settings, run_id))["status"] == "failed"
    assert (await job_row(settings, last.sync_job_id or ""))["full_sync"] is True
    full_run = await worker.run_start(sync_id, worker_id="w1")  # takes the queued job
    assert full_run.run is not None and full_run.sync is not None
    assert full_run.sync.pending_full_sync and full_run.sync.current_full_sync
    done = await worker.run_complete(
        sync_id, run_id=full_run.run["run_id"], lock_token=full_run.run["lock_token"]
    )
    assert done.outcome is Outcome.APPLIED and done.sync is not None
    assert not done.sync.pending_full_sync and not done.sync.current_full_sync


async def test_update_with_is_active_false_is_a_pause_in_a_second_version(
    client: SynclifeClient, lifecycle: Seen
) -> None:
    sync_id = new_sync_id()
    created = await client.create(sync_id, **{**CREATE, "initial_status": "SUSPENDED"})
    assert created.sync is not None
    resumed = await client.update(sync_id, status="ACTIVE", description="hello")
    assert resumed.outcome is Outcome.APPLIED and resumed.status is SyncStatus.ACTIVE
    result = await client.update(sync_id, batch_size=25, is_active=False)
    assert result.outcome is Outcome.APPLIED and result.sync is not None
    assert result.status is SyncStatus.SUSPENDED and result.sync.batch_size == 25
    assert result.sync.description == "hello"
    assert result.sync.paused_by_user_id is not None
    first, second = result.events
    v = result.sync.version
    assert (first, second) == (f"{sync_id}:v{v - 1}", f"{sync_id}:v{v}")
    events = await lifecycle.wait(sync_id, v)
    assert len(events) >= v
    by_id = {e[0]: e for e in lifecycle.events(sync_id)}
    assert by_id[first][1] == "sync.updated" and by_id[first][2].sync.batch_size == 25
    assert by_id[first][2].sync.status is SyncStatus.ACTIVE
    assert by_id[second][1] == "sync.status_changed"
    assert by_id[second][2].to_status is SyncStatus.SUSPENDED
    # Pausing a paused sync by update: no status change; nothing else changed: noop.
    again = await client.update(sync_id, is_active=False)
    assert again.outcome is Outcome.NOOP and again.version == v


async def test_create_without_provider_or_user_takes_the_caller(
    settings: Settings, service: Any, tenant: Tenant
) -> None:
    data = {"bucket_id": "bkt_1", "connection_id": "conn_1", "source_path": "anything at all"}
    async with SynclifeClient(
        settings, api_key=tenant.write_key, namespace=tenant.namespace
    ) as keyed:
        result = await keyed.create(new_sync_id(), **data)
        assert result.outcome is Outcome.APPLIED, result.error
        assert result.sync is not None and result.sync.provider is None
        assert result.sync.created_by_user_id == f"key:{tenant.write_key_id}"
        paused = await keyed.pause(result.sync_config_id or "")
        assert paused.outcome is Outcome.APPLIED and paused.sync is not None
        assert paused.sync.paused_by_user_id == f"key:{tenant.write_key_id}"
    conn = await connect(settings)
    try:
        owned = await create_key(conn, tenant.org_id, ["syncs:write"], user_id="user_ada")
    finally:
        await conn.close()
    async with SynclifeClient(settings, api_key=owned["key"], namespace=tenant.namespace) as c:
        result = await c.create(new_sync_id(), **data)
        assert result.outcome is Outcome.APPLIED and result.sync is not None
        assert result.sync.created_by_user_id == "user_ada"
        # The provider may be set once, and source_path is then checked against it.
        bad = await c.update(result.sync.sync_config_id, provider="s3")
        assert bad.outcome is Outcome.REJECTED and bad.error is not None
        assert "source_path" in bad.error.message
