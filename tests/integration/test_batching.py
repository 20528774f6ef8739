"""Lingering lanes (``SYNCLIFE_BATCH_LINGER_MS``): under a light load, commands that arrive
close together are decided in one batch, one transaction, instead of one each."""

from __future__ import annotations

import asyncio

import pytest

from events.client import SynclifeClient, new_sync_id
from events.service.app import Service
from events.service.db import connect
from events.service.settings import Settings
from statemachine import Outcome
from tests.helpers.live import Tenant, running, with_own_topics

pytestmark = pytest.mark.stack

CREATE = {
    "bucket_id": "bkt_batching",
    "connection_id": "conn_batching",
    "provider": "s3",
    "source_path": "batching/",
    "created_by_user_id": "user_ada",
}


async def test_a_lingering_lane_takes_the_commands_arriving_meanwhile_into_its_batch(
    settings: Settings, tenant: Tenant
) -> None:
    lingering = await with_own_topics(
        settings,
        apply_concurrency=1,  # every partition's records in one lane
        batch_linger_ms=1500,
    )
    async with (
        # No scheduler: the session's service schedules the shared database's syncs.
        running(Service(lingering, schedule=False)),
        SynclifeClient(lingering, api_key=tenant.write_key, namespace=tenant.namespace) as client,
    ):
        sends = []
        for _ in range(4):  # 100 ms apart: without lingering, each would be a batch of its own
            sends.append(asyncio.create_task(client.create(new_sync_id(), **CREATE)))
            await asyncio.sleep(0.1)
        results = await asyncio.wait_for(asyncio.gather(*sends), 60)

    assert [r.outcome for r in results] == [Outcome.APPLIED] * 4
    conn = await connect(settings)
    try:
        rows = await conn.fetch(
            "SELECT processed_at FROM processed_commands WHERE command_id = ANY($1::text[])",
            [r.command_id for r in results],
        )
    finally:
        await conn.close()
    # A batch's commands share its decision time.
    assert len(rows) == 4
    assert len({r["processed_at"] for r in rows}) == 1
