"""A batch reads without row locks and writes in one statement that checks, for every sync it
updates, that the sync is still at the version it read. A change committed in between (the
scheduler, a second owner of the partition) makes the write fail as a whole with a conflict,
and the batch is decided again on what is there now: no update is lost, nothing half-written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from events.client import SynclifeClient, new_sync_id
from events.envelope import command_headers
from events.service import processor
from events.service.app import Service
from events.service.db import connect
from events.service.processor import transaction
from events.service.settings import Settings
from statemachine import Outcome, SyncStatus
from tests.helpers.live import Tenant

pytestmark = pytest.mark.stack

CREATE = {
    "bucket_id": "bkt_fence",
    "connection_id": "conn_fence",
    "provider": "s3",
    "source_path": "fence/",
    "created_by_user_id": "user_ada",
}


@dataclass
class Command:
    """A consumed command record, as ``apply_batch`` reads it."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    partition: int = 0
    offset: int = 0
    command_id: str = field(default="")


def command(settings: Settings, tenant: Tenant, kind: str, sync_id: str, data: Any) -> Command:
    command_id = str(uuid.uuid4())
    headers = command_headers(
        command_id=command_id,
        command_type=kind,
        sync_config_id=sync_id,
        api_key=tenant.write_key,
        namespace=tenant.namespace,
        source="test",
    )
    return Command(
        settings.commands_topic,
        sync_id.encode(),
        json.dumps(data).encode(),
        headers,
        0,
        0,
        command_id,
    )


async def processed(settings: Settings, command_id: str) -> list[asyncpg.Record]:
    conn = await connect(settings)
    try:
        return await conn.fetch(
            "SELECT outcome, result FROM processed_commands WHERE command_id = $1", command_id
        )
    finally:
        await conn.close()


def interfere(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, command_id: str, concurrent: Command
) -> list[int]:
    """Make ``transaction.write``, the first time it writes ``command_id``'s batch, first commit
    ``concurrent`` on a connection of its own (with the real write). The list returned gets an
    item when it did. (Other writes, such as the scheduler's, pass untouched.)"""
    real_write = transaction.write
    interfered: list[int] = []

    async def write(conn: asyncpg.Connection, writes: Any) -> None:
        if not interfered and any(row[0] == command_id for row in writes.processed):
            interfered.append(1)
            other = await connect(settings)
            try:
                stats = await processor.apply_batch(other, settings, [concurrent])
            finally:
                await other.close()
            assert stats.applied == 1
        await real_write(conn, writes)

    monkeypatch.setattr(transaction, "write", write)
    return interfered


async def create_paused(client: SynclifeClient) -> tuple[str, int]:
    """A new sync, created paused: the scheduler leaves it alone."""
    sync_id = new_sync_id()
    created = await client.create(sync_id, **CREATE, initial_status="SUSPENDED")
    assert created.status is SyncStatus.SUSPENDED and created.version is not None
    return sync_id, created.version


async def test_a_write_after_a_concurrent_change_fails_whole_and_the_retry_sees_it(
    settings: Settings, client: SynclifeClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_id, version = await create_paused(client)
    update = command(settings, tenant, "sync.update", sync_id, {"polling_interval_seconds": 900})
    resume = command(settings, tenant, "sync.resume", sync_id, {"resumed_by_user_id": "bob"})
    interfered = interfere(monkeypatch, settings, resume.command_id, update)

    conn = await connect(settings)
    try:
        with pytest.raises(asyncpg.SerializationError):
            await processor.apply_batch(conn, settings, [resume])
        assert interfered == [1]
        # Nothing of the failed write is there: no processed command, and the sync is the
        # concurrent update's version, still paused.
        assert await processed(settings, resume.command_id) == []
        row = await conn.fetchrow(
            "SELECT status, version, data FROM syncs WHERE sync_config_id = $1", sync_id
        )
        assert row is not None
        assert row["version"] == version + 1
        assert row["status"] == SyncStatus.SUSPENDED.value

        # Read again: the resume is decided on the updated sync and keeps its change.
        stats = await processor.apply_batch(conn, settings, [resume])
    finally:
        await conn.close()
    assert stats.applied == 1
    [done] = await processed(settings, resume.command_id)
    result = json.loads(done["result"])
    assert result["outcome"] == Outcome.APPLIED.value
    # Its first change is the version after the update's (a resume may request a run too).
    assert result["events"][0] == f"{sync_id}:v{version + 2}"
    assert result["sync"]["status"] != SyncStatus.SUSPENDED.value
    assert result["sync"]["polling_interval_seconds"] == 900


async def test_the_service_retries_a_conflicting_batch_at_once_and_counts_it(
    settings: Settings,
    service: Service,
    client: SynclifeClient,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync_id, version = await create_paused(client)
    update = command(settings, tenant, "sync.update", sync_id, {"polling_interval_seconds": 600})
    command_id = str(uuid.uuid4())
    interfered = interfere(monkeypatch, settings, command_id, update)
    before = REGISTRY.get_sample_value("synclife_batch_conflicts_total") or 0.0

    resumed = await client.send(
        "sync.resume", sync_id, {"resumed_by_user_id": "bob"}, command_id=command_id
    )

    assert interfered == [1]
    assert REGISTRY.get_sample_value("synclife_batch_conflicts_total") == before + 1
    assert resumed is not None
    assert resumed.outcome is Outcome.APPLIED
    assert resumed.events[0] == f"{sync_id}:v{version + 2}"
    assert resumed.status is not SyncStatus.SUSPENDED
    assert resumed.sync is not None
    assert resumed.sync.polling_interval_seconds == 600
