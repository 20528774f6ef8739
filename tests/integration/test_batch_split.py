"""A command whose processing always exceeds the statement timeout (issue 16, hole 4): its
batch is retried within bounds, then applied in halves down to single commands; the commands
around it in the same batch are applied, the slow one is dead-lettered, and the lane goes on.
(Before, the timeout was retried forever: the batch, its lane and its partitions stalled until
a restart.)

The slow write is real: a trigger created by the test makes the write of one sync's row sleep,
and this test's service runs its sessions with a short ``statement_timeout``."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from events.client import SynclifeClient, new_sync_id
from events.service import db
from events.service.app import Service
from events.service.db import connect
from events.service.settings import Settings
from statemachine import Outcome
from tests.helpers.live import Tenant, running, with_own_topics
from tests.helpers.messages import CREATE, envelope

pytestmark = pytest.mark.stack

STATEMENT_TIMEOUT_MS = 1500  # this test's service only
WAIT_SECONDS = 120.0  # the commands' fate is awaited this long at most (not a timed assertion)


@pytest.fixture
async def slow_sync(settings: Settings) -> AsyncIterator[str]:
    """A sync id whose row's write sleeps far longer than the statement timeout."""
    sync_id = new_sync_id()
    name = f"test_slow_{secrets.token_hex(4)}"
    conn = await connect(settings)
    try:
        await conn.execute(
            f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$"""
        )
        await conn.execute(
            f"""CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON syncs FOR EACH ROW
                WHEN (NEW.sync_config_id = '{sync_id}') EXECUTE FUNCTION {name}()"""
        )
        yield sync_id
    finally:
        await conn.execute(f"DROP TRIGGER IF EXISTS {name} ON syncs")
        await conn.execute(f"DROP FUNCTION IF EXISTS {name}()")
        await conn.close()


async def _until(conn: asyncpg.Connection, query: str, *args: object, want: int) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while True:
        found = int(await conn.fetchval(query, *args))
        if found >= want or loop.time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_a_command_that_always_times_out_is_dead_lettered_and_its_batch_goes_on(
    settings: Settings, tenant: Tenant, slow_sync: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = await with_own_topics(settings, topic_partitions=1, apply_concurrency=1)
    # The pool of this test's service is created with these session settings.
    monkeypatch.setitem(db.SESSION_SETTINGS, "statement_timeout", str(STATEMENT_TIMEOUT_MS))

    # Five creates on the one partition, written before the service starts: one fetch, one
    # batch. The third is the slow one.
    syncs = [new_sync_id(), new_sync_id(), slow_sync, new_sync_id(), new_sync_id()]
    commands = [str(uuid.uuid4()) for _ in syncs]
    producer = AIOKafkaProducer(bootstrap_servers=own.kafka_bootstrap_servers)
    await producer.start()
    try:
        offsets = {}
        for sync_id, command_id in zip(syncs, commands, strict=True):
            written = await producer.send_and_wait(
                own.commands_topic,
                key=sync_id.encode(),
                value=json.dumps(CREATE).encode(),
                headers=envelope(command_id, "sync.create", sync_id, tenant=tenant),
            )
            offsets[sync_id] = written.offset
    finally:
        await producer.stop()

    conn = await connect(settings)
    try:
        async with (
            running(Service(own, schedule=False)),
            SynclifeClient(own, api_key=tenant.write_key, namespace=tenant.namespace) as client,
        ):
            good = [c for s, c in zip(syncs, commands, strict=True) if s != slow_sync]
            applied = await _until(
                conn,
                """SELECT count(*) FROM processed_commands
                   WHERE command_id = ANY($1::text[]) AND outcome = 'applied'""",
                good,
                want=len(good),
            )
            dead = await _until(
                conn,
                """SELECT count(*) FROM dead_letters
                   WHERE source_topic = $1 AND source_partition = 0 AND source_offset = $2""",
                own.commands_topic,
                offsets[slow_sync],
                want=1,
            )
            # The lane goes on: a command sent afterwards is applied.
            after = await asyncio.wait_for(client.create(new_sync_id(), **CREATE), WAIT_SECONDS)

        assert applied == len(good)
        assert dead == 1
        reason = await conn.fetchval(
            "SELECT reason FROM dead_letters WHERE source_topic = $1 AND source_offset = $2",
            own.commands_topic,
            offsets[slow_sync],
        )
        assert reason == "processing_failed: QueryCanceledError"
        assert after.outcome is Outcome.APPLIED
        slow_rows = await conn.fetchval(
            "SELECT count(*) FROM syncs WHERE sync_config_id = $1", slow_sync
        )
        assert slow_rows == 0  # the slow command was never applied
    finally:
        await conn.close()
