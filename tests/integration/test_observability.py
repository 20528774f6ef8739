"""/metrics, /healthz and /readyz of a running service, scraped after real traffic."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from events.client import SynclifeClient, new_sync_id
from events.service.app import Service

pytestmark = pytest.mark.stack

CREATE = {
    "bucket_id": "bkt_1",
    "connection_id": "conn_1",
    "provider": "s3",
    "source_path": "bucket-a/prefix",
    "created_by_user_id": "u1",
}


async def scrape(service: Service) -> dict[str, float]:
    assert service.health is not None
    url = f"http://127.0.0.1:{service.health.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) ([0-9.eE+-]+|NaN)$", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


async def test_metrics_move_with_traffic(service: Service, client: SynclifeClient) -> None:
    # One scheduler leads across every process on the database: wait until it is this one.
    assert service.scheduler is not None
    for _ in range(200):
        if service.scheduler.is_leader:
            break
        await asyncio.sleep(0.05)
    assert service.scheduler.is_leader
    before = await scrape(service)
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    # The scheduler requests the PENDING sync's first run (before it is paused: a paused sync
    # is never requested, and a pause can be applied before the scheduler's next pass).
    for _ in range(200):
        after = await scrape(service)
        if delta('synclife_scheduler_changes_total{event_type="sync.run_requested"}') >= 1:
            break
        await asyncio.sleep(0.1)
    assert delta('synclife_scheduler_changes_total{event_type="sync.run_requested"}') >= 1
    await client.pause(sync_id, paused_by_user_id="u1")
    await client.pause(sync_id, paused_by_user_id="u1")
    after = await scrape(service)

    assert delta('synclife_commands_total{outcome="applied",type="sync.pause"}') >= 1
    assert delta('synclife_commands_total{outcome="noop",type="sync.pause"}') >= 1
    assert delta('synclife_commands_total{outcome="applied",type="sync.create"}') >= 1
    assert delta("synclife_batch_apply_seconds_count") >= 1
    assert delta("synclife_relay_published_total") >= 3  # results and events went out
    assert "synclife_outbox_backlog" in after
    assert any(name.startswith("synclife_consumer_lag{") for name in after)


async def test_health_and_readiness(service: Service) -> None:
    assert service.health is not None
    base = f"http://127.0.0.1:{service.health.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{base}/readyz") as response:
            body = await response.json()
            assert response.status == 200, body
            assert body["status"] == "ready"
            assert body["checks"]["postgres"]["ok"] and body["checks"]["kafka"]["ok"]
