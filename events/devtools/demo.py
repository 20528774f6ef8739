"""``synclife demo``: the whole path on the real stack, printed step by step."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable

from events.client import Event, SynclifeClient, lifecycle_events, new_sync_id
from events.devtools import stack
from events.service.app import Service
from events.service.db import connect, migrate
from events.service.settings import Settings
from events.service.tenancy import create_key, create_namespace, create_org

__all__ = ["run_demo"]


async def run_demo(
    settings: Settings, out: Callable[[str], None], err: Callable[[str], None]
) -> None:
    env = await stack.up(settings, err)
    os.environ.update(env)
    settings = Settings()
    conn = await connect(settings)
    try:
        applied = await migrate(conn)
        err(f"migrations applied: {applied or 'none needed'}")
        org = await create_org(conn, f"demo-{secrets.token_hex(3)}")
        await create_namespace(conn, org["id"], "production")
        key = await create_key(conn, org["id"], ["syncs:write"])
    finally:
        await conn.close()
    err(f"organization {org['name']} ({org['id']}), namespace production, key {key['id']}")

    service = Service(settings)
    serving = asyncio.create_task(service.run())
    sync_id = new_sync_id()
    events: list[Event] = []

    async def watch() -> None:
        async for event in lifecycle_events(settings, sync_ids=[sync_id], from_beginning=True):
            events.append(event)

    watcher = asyncio.create_task(watch())
    try:
        async with SynclifeClient(settings, api_key=key["key"], namespace="production") as client:
            steps = [
                (
                    "create",
                    client.create(
                        sync_id,
                        bucket_id="bkt_marketing_assets",
                        connection_id="conn_abc123",
                        provider="s3",
                        source_path="marketing-assets/2026/",
                        created_by_user_id="user_ada",
                        polling_interval_seconds=60,
                    ),
                ),
                (
                    "pause",
                    client.pause(sync_id, paused_by_user_id="user_ada", reason="quarterly audit"),
                ),
                ("pause again", client.pause(sync_id, paused_by_user_id="user_ada")),
                ("resume", client.resume(sync_id, resumed_by_user_id="user_ada")),
            ]
            out(f"sync {sync_id}")
            last_version = 0
            for label, call in steps:
                result = await call
                last_version = max(last_version, result.version or 0)
                out(f"  {label:<12} -> {result.summary()}")
        for _ in range(100):  # the events of every version so far, or 10 s
            if len(events) >= last_version:
                break
            await asyncio.sleep(0.1)
        out("lifecycle events:")
        for event in events:
            d = event.data
            out(
                f"  v{d.version} {event.type:<20} {d.from_status or '-'} -> {d.to_status}"
                f"  paused={d.sync.paused} reason={d.reason!r} by {d.actor}"
            )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        service.stop.set()
        await serving
