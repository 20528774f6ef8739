"""The scheduler finds work through ``sync_timers``: every write keeps a sync's timer equal to
``timer_of`` the sync, and a pass that finds a timer out of date sets it right and does
nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.client import SynclifeClient, new_sync_id
from events.service.app import Service
from events.service.db import connect
from events.service.processor import timer_of
from events.service.settings import Settings
from statemachine import SyncConfiguration, SyncStatus
from tests.helpers.live import Clock, scheduler_passes

pytestmark = pytest.mark.stack

CREATE: dict[str, Any] = {
    "bucket_id": "bkt_timers",
    "connection_id": "conn_timers",
    "provider": "s3",
    "source_path": "timers/",
    "created_by_user_id": "user_ada",
    "polling_interval_seconds": 60,
}


async def stored(settings: Settings, sync_id: str) -> tuple[SyncConfiguration, datetime | None]:
    """The sync as stored, and its timer."""
    conn = await connect(settings)
    try:
        row = await conn.fetchrow(
            """SELECT s.data::text AS data, t.due_at
               FROM syncs AS s JOIN sync_timers AS t USING (sync_config_id)
               WHERE sync_config_id = $1""",
            sync_id,
        )
    finally:
        await conn.close()
    assert row is not None, "every sync has a timer"
    return SyncConfiguration.model_validate_json(row["data"]), row["due_at"]


async def assert_timer_matches(settings: Settings, sync_id: str) -> SyncConfiguration:
    sync, due_at = await stored(settings, sync_id)
    assert due_at == timer_of(sync)
    return sync


async def test_every_change_keeps_the_timer_of_the_sync(
    settings: Settings,
    client: SynclifeClient,
    worker: SynclifeClient,
    service: Service,
    clock: Clock,
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    created = await assert_timer_matches(settings, sync_id)
    assert created.status is SyncStatus.PENDING and created.next_sync_at is not None

    started = await worker.run_start(sync_id, worker_id="w1", lease_seconds=60)
    leased = await assert_timer_matches(settings, sync_id)
    assert leased.lock_expires_at is not None  # the timer is the lease's expiry now
    assert started.run is not None
    await worker.run_complete(
        sync_id, run_id=str(started.run["run_id"]), lock_token=int(started.run["lock_token"])
    )
    polled = await assert_timer_matches(settings, sync_id)
    assert polled.status is SyncStatus.ACTIVE and polled.lock_expires_at is None

    await client.pause(sync_id, paused_by_user_id="user_bob")
    paused, due_at = await stored(settings, sync_id)
    assert paused.status is SyncStatus.SUSPENDED and due_at is None

    await client.resume(sync_id)
    await assert_timer_matches(settings, sync_id)
    clock.advance(61)
    await scheduler_passes(service)
    await assert_timer_matches(settings, sync_id)


async def test_a_pass_sets_an_out_of_date_timer_right_and_requests_nothing(
    settings: Settings, client: SynclifeClient, service: Service
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE, initial_status="SUSPENDED")
    before, due_at = await stored(settings, sync_id)
    assert due_at is None
    conn = await connect(settings)
    try:  # not what any write does: a timer that says "due" for a paused sync
        await conn.execute(
            "UPDATE sync_timers SET due_at = $2 WHERE sync_config_id = $1",
            sync_id,
            datetime.now(UTC) - timedelta(hours=1),
        )
    finally:
        await conn.close()

    await scheduler_passes(service)

    after, due_at = await stored(settings, sync_id)
    assert due_at is None
    assert after.version == before.version  # no run requested, no change
