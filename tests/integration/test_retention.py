"""Retention on the real stack: processed command ids past the dedupe window and history rows
past their retention are deleted in batches; recent ones are kept and still deduplicate; a
command whose result is still in the outbox, or parked, is kept.

Each pass here is one ``Retention.tick`` with a clock of its own, set from the service's
controlled clock: the session's service keeps its retention leader on the defaults (7 and 90
days), so moving the session clock by days would make it forget the ids of later tests.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from events.client import new_sync_id
from events.messages import CommandResult
from events.service.app import Service
from events.service.db import connect
from events.service.packed_headers import pack_headers
from events.service.retention import Retention
from events.service.settings import Settings
from statemachine import ErrorCode, Outcome
from tests.helpers.live import Clock, Seen, Tenant
from tests.helpers.messages import CREATE, envelope, rejected, result_for

pytestmark = pytest.mark.stack

WINDOW_DAYS = 7


async def send(
    producer: AIOKafkaProducer, settings: Settings, tenant: Tenant, command_id: str, sync_id: str
) -> None:
    await producer.send_and_wait(
        settings.commands_topic,
        key=sync_id.encode(),
        value=json.dumps(CREATE).encode(),
        headers=envelope(command_id, "sync.create", sync_id, tenant=tenant),
    )


async def copies(results: Seen, key: str, command_id: str, count: int) -> list[bytes]:
    """The values of the first ``count`` copies of ``command_id``'s result under ``key``."""
    for _ in range(400):
        found = [
            v or b""
            for h, v in results.by_key[key]
            if h.get("ce_id") == f"result:{command_id}".encode()
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{command_id}: fewer than {count} results")


async def rows(settings: Settings, command_ids: list[str]) -> tuple[set[str], int]:
    """Which of ``command_ids`` are still processed, and their history rows."""
    conn = await connect(settings)
    try:
        processed = await conn.fetch(
            "SELECT command_id FROM processed_commands WHERE command_id = ANY($1::text[])",
            command_ids,
        )
        history = await conn.fetchval(
            "SELECT count(*) FROM sync_history WHERE command_id = ANY($1::text[])", command_ids
        )
    finally:
        await conn.close()
    return {r["command_id"] for r in processed}, int(history)


async def outbox_drained_up_to(conn: asyncpg.Connection, command_id: str) -> None:
    """Wait (at most 20 s) until the outbox holds no row written with or before
    ``command_id``'s transaction: the relay has published and deleted them."""
    for _ in range(400):
        if not await conn.fetchval(
            """SELECT count(*) FROM outbox
               WHERE xid <= (SELECT xid FROM processed_commands WHERE command_id = $1)""",
            command_id,
        ):
            return
        await asyncio.sleep(0.05)


async def test_old_ids_and_history_deleted_in_batches_recent_kept_and_deduplicated(
    settings: Settings,
    service: Service,
    clock: Clock,
    tenant: Tenant,
    results: Seen,
    raw_producer: AIOKafkaProducer,
) -> None:
    old = [(str(uuid.uuid4()), new_sync_id()) for _ in range(5)]
    recent = [(str(uuid.uuid4()), new_sync_id()) for _ in range(2)]
    for cid, sid in old:
        await send(raw_producer, settings, tenant, cid, sid)
    for cid, sid in old:
        assert (await result_for(results, sid, cid)).outcome is Outcome.APPLIED
    clock.advance(3600)  # the recent commands are processed an hour after the old ones
    for cid, sid in recent:
        await send(raw_producer, settings, tenant, cid, sid)
    for cid, sid in recent:
        assert (await result_for(results, sid, cid)).outcome is Outcome.APPLIED
    ids = [cid for cid, _ in old + recent]
    assert await rows(settings, ids) == (set(ids), len(ids))

    # A pass half an hour after the old commands left the window (and the history's retention),
    # half an hour before the recent ones do.
    later = Clock()
    later.offset = clock.offset + timedelta(days=WINDOW_DAYS, seconds=-1800)
    retention = Retention(
        settings.model_copy(
            update={
                "dedupe_window_days": WINDOW_DAYS,
                "history_retention_days": WINDOW_DAYS,
                "retention_batch_size": 2,
            }
        ),
        later,
    )
    conn = await connect(settings)
    try:
        done = await retention.tick(conn)
    finally:
        await conn.close()

    assert await rows(settings, ids) == ({cid for cid, _ in recent}, len(recent))
    # In batches of at most 2 rows, one statement each, until one found fewer: the 5 old ids
    # (and whatever older rows earlier tests left) took at least 3 statements, as did their
    # 5 history rows.
    for counts in (done.processed, done.history):
        assert len(counts) >= 3, done
        assert all(n == 2 for n in counts[:-1]) and counts[-1] < 2, done

    # Within the window, a redelivery is still answered with the stored result, not applied.
    cid, sid = recent[0]
    await send(raw_producer, settings, tenant, cid, sid)
    first, again = (await copies(results, sid, cid, 2))[:2]
    assert again == first
    assert await rows(settings, [cid]) == ({cid}, 1)
    # Past it, the id is forgotten: the same create is processed as a new command.
    cid, sid = old[0]
    await send(raw_producer, settings, tenant, cid, sid)
    _, again = (await copies(results, sid, cid, 2))[:2]
    rejected(CommandResult.model_validate_json(again), ErrorCode.ALREADY_EXISTS)


async def test_a_command_whose_result_is_still_in_the_outbox_is_kept(
    settings: Settings, service: Service, clock: Clock
) -> None:
    """Its id is kept past the window while the outbox holds a row of its transaction or an
    earlier one; deleted once that row is gone."""
    command_id = f"retention-{uuid.uuid4()}"
    conn = await connect(settings)
    try:
        long_ago = clock() - timedelta(days=30)
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO processed_commands (command_id, command_type, outcome, result,
                                                   processed_at)
                   VALUES ($1, 'sync.create', 'applied', '{}', $2)""",
                command_id,
                long_ago,
            )
            # An outbox row of an earlier transaction than the command's (as one the relay has not
            # published yet). Below the running relay's horizon, so it leaves the row alone.
            row = await conn.fetchval(
                """INSERT INTO outbox (topic, key, value, headers, xid)
                   VALUES ($1, $2, NULL, $3, '1'::xid8) RETURNING id""",
                settings.results_topic,
                b"retention-test",
                pack_headers([]),
            )
        retention = Retention(settings, clock)
        try:
            await retention.tick(conn)
            assert await rows(settings, [command_id]) == ({command_id}, 0)
        finally:
            await conn.execute("DELETE FROM outbox WHERE id = $1", row)
        # Once the relay has also deleted what earlier tests wrote before it:
        await outbox_drained_up_to(conn, command_id)
        await retention.tick(conn)
        assert await rows(settings, [command_id]) == (set(), 0)
    finally:
        await conn.close()


async def processed_behind_parked(
    conn: asyncpg.Connection, command_id: str, at: datetime, topic: str
) -> int:
    """``command_id`` processed at ``at``, and a row of ``topic`` parked just before it: the
    parked row's id."""
    await conn.execute(
        """INSERT INTO processed_commands (command_id, command_type, outcome, result,
                                           processed_at)
           VALUES ($1, 'sync.create', 'applied', '{}', $2)""",
        command_id,
        at,
    )
    parked: int = await conn.fetchval(
        """INSERT INTO outbox_parked (id, topic, key, value, headers, created_at, reason,
                                      attempts)
           VALUES (-1 - (random() * 1e9)::bigint, $1, $2, NULL, $3, $4, 'test', 1)
           RETURNING id""",
        topic,
        b"retention-test",
        pack_headers([]),
        at - timedelta(seconds=1),
    )
    return parked


async def test_a_command_whose_result_is_parked_is_kept(
    settings: Settings, service: Service, clock: Clock
) -> None:
    """Kept while a row written when it was processed (or before) is parked; deleted once the
    parked row is gone."""
    command_id = f"retention-{uuid.uuid4()}"
    long_ago = clock() - timedelta(days=30)
    conn = await connect(settings)
    try:
        parked = await processed_behind_parked(conn, command_id, long_ago, settings.results_topic)
        retention = Retention(settings, clock)
        try:
            await retention.tick(conn)
            assert await rows(settings, [command_id]) == ({command_id}, 0)
        finally:
            await conn.execute("DELETE FROM outbox_parked WHERE id = $1", parked)
        await outbox_drained_up_to(conn, command_id)  # nothing written before it either
        await retention.tick(conn)
        assert await rows(settings, [command_id]) == (set(), 0)
    finally:
        await conn.close()


async def test_a_parked_dead_letter_keeps_no_command(
    settings: Settings, service: Service, clock: Clock
) -> None:
    """Only a parked result keeps processed ids: a parked dead letter (a hostile message too
    large for the dead-letter topic, say) holds no stored result, and must not stop the
    cleaning of every id processed after it."""
    own = settings.model_copy(update={"results_topic": f"retention.{uuid.uuid4().hex}"})
    command_id = f"retention-{uuid.uuid4()}"
    long_ago = clock() - timedelta(days=30)
    conn = await connect(own)
    try:
        parked = await processed_behind_parked(conn, command_id, long_ago, own.dlq_topic)
        try:
            await outbox_drained_up_to(conn, command_id)
            await Retention(own, clock).tick(conn)
            assert await rows(own, [command_id]) == (set(), 0)
        finally:
            await conn.execute("DELETE FROM outbox_parked WHERE id = $1", parked)
    finally:
        await conn.close()
