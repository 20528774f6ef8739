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
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from events import processor
from events.client import SynclifeClient, new_sync_id
from events.db import connect
from events.envelope import ce_headers
from events.service import Service
from events.settings import Settings
from statemachine import Outcome, SyncStatus
from tests.integration.conftest import Tenant

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
    key: bytes
    value: bytes
    headers: Sequence[tuple[str, bytes]]
    partition: int = 0
    offset: int = 0
    command_id: str = field(default="")


def command(settings: Settings, tenant: Tenant, kind: str, sync_id: str, data: Any) -> Command:
    command_id = str(uuid.uuid4())
    headers = ce_headers(
        event_id=command_id,
        event_type=kind,
        source="test",
        subject=sync_id,
        time=datetime.now(UTC),
        extra={"authorization": f"Bearer {tenant.write_key}", "x-namespace": tenant.namespace},
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


def interfering_write(
    settings: Settings, sync_id: str, concurrent: Command
) -> tuple[Any, list[int]]:
    """A stand-in for ``processor._write`` that, the first time a batch writes ``sync_id``,
    first commits ``concurrent`` on a connection of its own (with the real write)."""
    real_write = processor._write
    interfered: list[int] = []

    async def write(conn: asyncpg.Connection, writes: Any) -> None:
        if sync_id in writes.updates and not interfered:
            interfered.append(1)
            other = await connect(settings)
            try:
                stats = await processor.apply_batch(other, settings, [concurrent])
            finally:
                await other.close()
            assert stats.applied == 1
        await real_write(conn, writes)

    return write, interfered


async def test_a_write_after_a_concurrent_change_fails_whole_and_the_retry_sees_it(
    settings: Settings, client: SynclifeClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await client.create(new_sync_id(), **CREATE)
    sync_id = created.sync_config_id
    assert created.version is not None
    update = command(settings, tenant, "sync.update", sync_id, {"polling_interval_seconds": 900})
    pause = command(settings, tenant, "sync.pause", sync_id, {"paused_by_user_id": "user_bob"})
    write, interfered = interfering_write(settings, sync_id, update)
    monkeypatch.setattr(processor, "_write", write)

    conn = await connect(settings)
    try:
        with pytest.raises(asyncpg.SerializationError):
            await processor.apply_batch(conn, settings, [pause])
        assert interfered == [1]
        # Nothing of the failed write is there: no processed command, and the sync is the
        # concurrent update's version, not paused.
        assert created.status is not SyncStatus.SUSPENDED
        assert await processed(settings, pause.command_id) == []
        row = await conn.fetchrow(
            "SELECT status, version, data FROM syncs WHERE sync_config_id = $1", sync_id
        )
        assert row["version"] == created.version + 1
        assert row["status"] == created.status

        # Read again: the pause is decided on the updated sync and keeps its change.
        stats = await processor.apply_batch(conn, settings, [pause])
    finally:
        await conn.close()
    assert stats.applied == 1
    [done] = await processed(settings, pause.command_id)
    result = json.loads(done["result"])
    assert result["outcome"] == Outcome.APPLIED.value
    assert result["version"] == created.version + 2
    assert result["sync"]["status"] == SyncStatus.SUSPENDED.value
    assert result["sync"]["polling_interval_seconds"] == 900


async def test_the_service_retries_a_conflicting_batch_at_once_and_counts_it(
    settings: Settings,
    service: Service,
    client: SynclifeClient,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = await client.create(new_sync_id(), **CREATE)
    sync_id = created.sync_config_id
    assert created.version is not None
    update = command(settings, tenant, "sync.update", sync_id, {"polling_interval_seconds": 600})
    write, interfered = interfering_write(settings, sync_id, update)
    monkeypatch.setattr(processor, "_write", write)
    before = REGISTRY.get_sample_value("synclife_batch_conflicts_total") or 0.0

    paused = await client.pause(sync_id, paused_by_user_id="user_bob")

    assert interfered == [1]
    assert REGISTRY.get_sample_value("synclife_batch_conflicts_total") == before + 1
    assert paused.outcome is Outcome.APPLIED
    assert paused.version == created.version + 2
    assert paused.sync is not None
    assert paused.sync.polling_interval_seconds == 600
    assert paused.status is SyncStatus.SUSPENDED
