"""``GET /v1/events`` on the real stack: an API key's live stream of its namespace's lifecycle
events (Kafka in, Postgres, the relay, the lifecycle topic, the gateway's consumer, the
stream): each event whole with its id and type, the sync as the API shows it (no fencing
token), only the key's namespace, and the stream ended once the key is revoked."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from events.client import SynclifeClient
from events.gateway import Gateway, stream
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import create_key, revoke_key
from tests.helpers.gateway import KEYS, Api, api_for, create_sync, key_with, sync_path
from tests.helpers.live import Tenant, new_tenant

pytestmark = pytest.mark.stack

BUCKET = "bkt_stream"
#: How long a test waits for an event it expects: a hang fails, not a slow machine.
WAIT_SECONDS = 30


class Stream:
    """A client's view of an event stream: its events, one at a time."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> tuple[str | None, str, Any] | None:
        """The next event (its id, its name, its data), None at the stream's end."""
        event_id, name, data = None, "message", ""
        while True:
            raw = await self.response.content.readline()
            if not raw:
                return None
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                return event_id, name, json.loads(data)


@contextlib.asynccontextmanager
async def open_stream(
    session: aiohttp.ClientSession, gateway: Gateway, key: str, namespace: str
) -> AsyncIterator[Stream]:
    headers = {"Authorization": f"Bearer {key}", "X-Namespace": namespace}
    async with session.get(gateway.url + "/v1/events", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = Stream(response)
        assert await events.next() == (None, "ready", {})
        yield events


async def test_the_stream_carries_the_namespaces_events_whole_and_no_other(
    settings: Settings, gateway: Gateway, tenant: Tenant, api: Api, worker: SynclifeClient
) -> None:
    other = await new_tenant(settings)
    reader = await key_with(settings, tenant, ["syncs:read"])
    seen: list[tuple[str | None, str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        api_for(gateway, other) as their_api,
        open_stream(session, gateway, reader, tenant.namespace) as events,
    ):
        theirs = await create_sync(their_api, BUCKET)
        mine = await create_sync(api, BUCKET)
        started = await worker.run_start(mine["sync_config_id"], worker_id="w1")
        assert started.run is not None
        paused = await api.call("POST", sync_path(mine, "/pause"))
        assert paused.status == 200, paused.body
        async with asyncio.timeout(WAIT_SECONDS):  # until the pause's event
            while not seen or seen[-1][2].get("version") != paused.body["version"]:
                event = await events.next()
                assert event is not None, "the stream ended"
                seen.append(event)
    assert {d["sync_config_id"] for _, _, d in seen} == {mine["sync_config_id"]}
    assert theirs["sync_config_id"] not in json.dumps([d for _, _, d in seen])
    versions = [d["version"] for _, _, d in seen]
    assert versions == sorted(versions), versions
    assert all(event_id for event_id, _, _ in seen)  # each event's own id
    pause = seen[-1]
    assert pause[1] == "sync.status_changed" and pause[2]["to_status"] == "SUSPENDED"
    assert pause[2]["sync"]["sync_config_id"] == mine["sync_config_id"]
    assert pause[2]["sync"]["paused"] is True
    # The run's fencing token is in neither its event (PENDING -> ACTIVE: a status change)
    # nor any sync shown on HTTP.
    run = next(d for _, _, d in seen if d.get("run_id") == started.run["run_id"])
    assert run["sync"]["locked"] is True
    assert "lock_token" not in json.dumps([d for _, _, d in seen])


async def test_a_stream_needs_a_key_that_may_read_the_namespace(
    settings: Settings, gateway: Gateway, tenant: Tenant
) -> None:
    other = await new_tenant(settings)
    async with aiohttp.ClientSession() as session:
        for headers, status in (
            ({}, 401),
            ({"Authorization": "Bearer sk_not_a_key_0123456789abcdef0123456789"}, 401),
            ({"Authorization": f"Bearer {tenant.write_key}"}, 400),  # no X-Namespace
            (
                # Another organization's namespace (by id: names repeat across organizations).
                {"Authorization": f"Bearer {tenant.write_key}", "X-Namespace": other.namespace_id},
                403,
            ),
        ):
            async with session.get(gateway.url + "/v1/events", headers=headers) as response:
                assert response.status == status, (headers.keys(), response.status)
                body = await response.json()
                assert body["success"] is False and body["status"] == status


async def test_a_revoked_key_ends_its_stream(
    settings: Settings, gateway: Gateway, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "RECHECK_SECONDS", 0.2)
    conn = await connect(settings)
    try:
        made = await create_key(conn, tenant.org_id, ["syncs:read"])
        KEYS.add(str(made["key"]))
        async with aiohttp.ClientSession() as session:
            async with open_stream(session, gateway, str(made["key"]), tenant.namespace) as events:
                await revoke_key(conn, str(made["id"]))
                async with asyncio.timeout(WAIT_SECONDS):
                    last = await events.next()
                    assert last is not None and last[1] == "end", last
                    assert await events.next() is None  # and the stream is closed
    finally:
        await conn.close()
