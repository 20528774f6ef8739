"""One sync the scheduler cannot decide (its stored document no longer validates) is skipped,
counted and put back for later; every other sync still gets its runs requested."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from events.client import SynclifeClient, new_sync_id
from events.service.app import Service
from events.service.db import connect
from events.service.settings import Settings
from statemachine import SyncConfiguration

pytestmark = pytest.mark.stack

CREATE: dict[str, Any] = {
    "bucket_id": "bkt_isolation",
    "connection_id": "conn_isolation",
    "provider": "s3",
    "source_path": "isolation/",
    "created_by_user_id": "user_ada",
    "polling_interval_seconds": 60,
}


def skipped_rows() -> float:
    return REGISTRY.get_sample_value("synclife_scheduler_rows_skipped_total") or 0.0


async def run_requested(settings: Settings, sync_id: str, timeout: float = 20.0) -> bool:
    """Wait (at most ``timeout``) until the stored sync says a run was requested."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    conn = await connect(settings)
    try:
        while loop.time() < deadline:
            data = await conn.fetchval(
                "SELECT data::text FROM syncs WHERE sync_config_id = $1", sync_id
            )
            if SyncConfiguration.model_validate_json(data).run_requested_at is not None:
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await conn.close()


async def test_a_sync_that_does_not_validate_does_not_stop_the_others(
    settings: Settings, client: SynclifeClient, service: Service
) -> None:
    bad = new_sync_id()
    await client.create(bad, **CREATE, initial_status="SUSPENDED")
    skipped_before = skipped_rows()
    conn = await connect(settings)
    original = await conn.fetchval("SELECT data::text FROM syncs WHERE sync_config_id = $1", bad)
    try:
        # Stored data that no longer validates (a status no version of the service knows),
        # and a timer that puts it first in every pass.
        await conn.execute(
            """UPDATE syncs SET data = jsonb_set(data::jsonb, '{status}', '"NOT_A_STATUS"')
               WHERE sync_config_id = $1""",
            bad,
        )
        await conn.execute(
            """INSERT INTO sync_timers (sync_config_id, due_at) VALUES ($1, '2000-01-01Z')
               ON CONFLICT (sync_config_id) DO UPDATE SET due_at = EXCLUDED.due_at""",
            bad,
        )

        good = new_sync_id()
        await client.create(good, **CREATE)  # PENDING: due at once
        assert await run_requested(settings, good), "the other syncs get no runs requested"

        # The bad row was skipped and counted, and its timer pushed back (not every pass).
        assert skipped_rows() > skipped_before
        due_at: datetime = await conn.fetchval(
            "SELECT due_at FROM sync_timers WHERE sync_config_id = $1", bad
        )
        assert due_at > await conn.fetchval("SELECT now()")
    finally:
        await conn.execute(
            "UPDATE syncs SET data = $2::jsonb WHERE sync_config_id = $1", bad, original
        )
        await conn.execute("UPDATE sync_timers SET due_at = NULL WHERE sync_config_id = $1", bad)
        await conn.close()
