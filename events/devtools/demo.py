"""``synclife demo``: the whole path on the real stack, printed step by step."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from typing import Any

import aiohttp

from events.client import Event, SynclifeClient, lifecycle_events, new_sync_id
from events.devtools import stack
from events.gateway import Gateway
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
        key = await create_key(conn, org["id"], ["syncs:write"], user_id="user_ada")
    finally:
        await conn.close()
    err(f"organization {org['name']} ({org['id']}), namespace production, key {key['id']}")

    service = Service(settings)
    serving = asyncio.create_task(service.run())
    gateway = Gateway(settings)
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
        await gateway.start()
        await _over_http(gateway.url, key["key"], out, err)
    finally:
        await gateway.close()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        service.stop.set()
        await serving


def _summary(status: int, body: dict[str, Any]) -> str:
    if status != 200:
        return f"HTTP {status} {body.get('error', {}).get('type')}"
    return f"HTTP 200 status={body['status']} paused={body['paused']} version={body['version']}"


async def _over_http(
    url: str, api_key: str, out: Callable[[str], None], err: Callable[[str], None]
) -> None:
    """The vendor's REST API on the gateway: create and pause, then the seed's resume as curl."""
    bucket = "bkt_marketing_assets"
    headers = {"Authorization": f"Bearer {api_key}", "X-Namespace": "production"}
    out(f"HTTP API at {url}:")
    async with aiohttp.ClientSession(url, headers=headers) as http:
        body = {
            "connection_id": "conn_abc123",
            "source_path": "marketing-assets/2026/",
            "polling_interval_seconds": 60,
            "description": "Marketing assets, synced every minute",
        }
        async with http.post(f"/v1/buckets/{bucket}/syncs", json=body) as resp:
            created = await resp.json()
        if resp.status != 200:
            out(f"  POST /v1/buckets/{bucket}/syncs -> {_summary(resp.status, created)}")
            return
        sync_id = created["sync_config_id"]
        out(f"  POST /v1/buckets/{bucket}/syncs -> {_summary(200, created)} {sync_id}")
        path = f"/v1/buckets/{bucket}/syncs/{sync_id}"
        async with http.post(f"{path}/pause") as resp:
            out(f"  POST {path}/pause -> {_summary(resp.status, await resp.json())}")
    curl = (
        f"curl -sS -X POST {url}{path}/resume "
        '-H "Authorization: Bearer $SYNCLIFE_API_KEY" -H "X-Namespace: production"'
    )
    out("the seed's call (the key in $SYNCLIFE_API_KEY):")
    out(f"  {curl}")
    if shutil.which("curl") is None:
        err("curl is not installed: the call is shown, not made")
        return
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        curl,
        env={**os.environ, "SYNCLIFE_API_KEY": api_key},
        stdout=asyncio.subprocess.PIPE,
    )
    answer, _ = await proc.communicate()
    resumed = json.loads(answer)
    out(
        f"  -> status={resumed.get('status')} paused={resumed.get('paused')} "
        f"is_active={resumed.get('is_active')} pause_reason={resumed.get('pause_reason')} "
        f"version={resumed.get('version')}"
    )
