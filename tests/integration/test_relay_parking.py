"""The relay is never blocked by one row: a row Kafka refuses for good is parked with its
reason, the rows behind it are published once and deleted, the parked row is counted in
/metrics, shown by ``synclife outbox parked`` and published by ``synclife outbox retry`` once
its cause is fixed. A parked lifecycle event holds its sync's later events (no version gap).

The local broker does not create topics (``auto.create.topics.enable=false``), so a row for a
topic that does not exist is refused too, once aiokafka's lookup gives up (40 s)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from events.service.app import Service
from events.service.db import connect
from events.service.packed_headers import pack_headers
from events.service.settings import Settings
from tests.helpers.live import SESSION_TOPICS, Seen, run_cli, watch, with_own_topics

pytestmark = pytest.mark.stack

PAYLOAD = b"PARKED-PAYLOAD-"  # what the value of a refused row is made of: never shown


async def _insert(conn: asyncpg.Connection, rows: list[tuple[str, str, bytes]]) -> list[int]:
    """Outbox rows (topic, key, body), in one transaction, in this order; their ids. The body
    is a header (``body``) and the value is empty: the client's readers of the session's
    topics skip such a record instead of reading it as an event or a result."""
    ids = []
    async with conn.transaction():
        for topic, key, body in rows:
            ids.append(
                await conn.fetchval(
                    """INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, NULL, $3)
                       RETURNING id""",
                    topic,
                    key.encode(),
                    pack_headers([("ce_id", secrets.token_hex(8).encode()), ("body", body)]),
                )
            )
    return ids


async def _parked(conn: asyncpg.Connection, ids: list[int], timeout: float = 90) -> dict[int, Any]:
    """Wait until every row of ``ids`` is parked; their parked rows by id."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = await conn.fetch("SELECT * FROM outbox_parked WHERE id = ANY($1)", ids)
        if len(rows) == len(ids):
            return {r["id"]: r for r in rows}
        assert loop.time() < deadline, f"parked: {sorted(r['id'] for r in rows)} of {ids}"
        await asyncio.sleep(0.1)


async def _deleted(
    conn: asyncpg.Connection, ids: list[int], published: Callable[[], int], timeout: float = 60
) -> None:
    """Wait until the outbox rows ``ids`` are deleted (published); ``published`` counts how
    often one of them was, for the failure's message."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await conn.fetchval("SELECT count(*) FROM outbox WHERE id = ANY($1)", ids):
        assert loop.time() < deadline, f"never deleted; published {published()} times"
        await asyncio.sleep(0.1)


async def _synclife(settings: Settings, *args: str) -> str:
    env = {
        **os.environ,
        "SYNCLIFE_DATABASE_URL": settings.database_url.get_secret_value(),
        "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
    }
    code, out, err = await run_cli(*args, env=env)
    assert code == 0, err
    return out


async def _shown(settings: Settings) -> dict[int, dict[str, Any]]:
    out = await _synclife(settings, "outbox", "parked", "--json")
    assert PAYLOAD.decode() not in out  # no value, no headers: an id, topic, key, size, reason
    rows = [json.loads(line) for line in out.splitlines()]
    return {r["id"]: r for r in rows}


async def _max_message_bytes(settings: Settings, topic: str, limit: int) -> None:
    """Set a topic's ``max.message.bytes``, and wait until the broker reports it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(limit)})]
        )
        for _ in range(100):
            [response] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, None)]
            )
            configs = {c[0]: c[1] for c in response.resources[0][4]}
            if configs.get("max.message.bytes") == str(limit):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{topic}: max.message.bytes is not {limit}")
    finally:
        await admin.close()


async def _metrics(service: Service) -> dict[str, float]:
    """The service's /metrics: each sample's value by its name and labels."""
    assert service.health is not None
    url = f"http://127.0.0.1:{service.health.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    sample = re.compile(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) ([0-9.eE+-]+|NaN)$")
    return {m[1]: float(m[2]) for m in map(sample.match, text.splitlines()) if m}


async def _values(seen: Seen, key: str, count: int) -> list[bytes]:
    """The bodies of the first ``count`` records of ``key``."""
    return [headers["body"] for headers, _ in await seen.wait(key, count, timeout=90)]


@pytest.fixture
async def conn(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await connect(settings)
    yield connection
    await connection.close()


async def test_a_row_larger_than_its_topic_takes_is_parked_and_the_rows_behind_go_on_once(
    settings: Settings,
    service: Service,
    conn: asyncpg.Connection,
    lifecycle: Seen,
    results: Seen,
) -> None:
    # A topic that takes records of at most 16 KiB (4 * max_message_bytes).
    small = await with_own_topics(settings, max_message_bytes=4096)
    tag = secrets.token_hex(4)
    k1, k2, big_key, huge_key = (f"{name}-{tag}" for name in ("k1", "k2", "big", "huge"))
    before = await _metrics(service)
    ids = await _insert(
        conn,
        [
            (settings.results_topic, k1, b"before"),
            (small.results_topic, big_key, PAYLOAD * 2500),  # 37 KB: the broker refuses it
            (settings.lifecycle_topic, k2, b"after-1"),
            # Larger than the producer's requests may be (4 MiB): refused before it is sent.
            (settings.results_topic, huge_key, PAYLOAD * (4 * 1024 * 1024 // len(PAYLOAD) + 1)),
            (settings.results_topic, k1, b"after-2"),
        ],
    )
    big, huge = ids[1], ids[3]
    # The rows behind them go on: published and deleted (a relay that starts over at the
    # refused row publishes them again and again, and never deletes them).
    await _deleted(conn, [ids[0], ids[2], ids[4]], lambda: len(results.by_key[k1]))
    # Each once: a row after them on each partition shows the relay went past them.
    await _insert(
        conn, [(settings.results_topic, k1, b"last"), (settings.lifecycle_topic, k2, b"last")]
    )
    assert await _values(results, k1, 3) == [b"before", b"after-2", b"last"]
    assert await _values(lifecycle, k2, 2) == [b"after-1", b"last"]
    parked = await _parked(conn, [big, huge])
    assert {i: (r["reason"], r["attempts"]) for i, r in parked.items()} == {
        big: ("too_large", 1),
        huge: ("too_large", 1),
    }
    assert not await conn.fetchval("SELECT count(*) FROM outbox WHERE id = ANY($1)", ids)

    after = await _metrics(service)
    label = 'synclife_relay_parked_total{reason="too_large"}'
    assert after[label] - before.get(label, 0.0) == 2
    assert after["synclife_outbox_parked"] == await conn.fetchval(
        "SELECT count(*) FROM outbox_parked"
    )

    shown = await _shown(settings)
    assert {k: shown[big][k] for k in ("topic", "key", "reason", "held_by", "attempts")} == {
        "topic": small.results_topic,
        "key": big_key,
        "reason": "too_large",
        "held_by": None,
        "attempts": 1,
    }
    assert shown[big]["size"] >= len(PAYLOAD) * 2500
    assert shown[huge]["reason"] == "too_large"

    # Fixed (the topic takes larger records now), retried: published once.
    await _max_message_bytes(settings, small.results_topic, 1_048_576)
    out = await _synclife(settings, "outbox", "retry", str(big), "--json")
    assert json.loads(out) == {"retried": [big]}
    async for seen in watch(settings, small.results_topic):
        await _insert(conn, [(small.results_topic, big_key, b"last")])
        assert await _values(seen, big_key, 2) == [PAYLOAD * 2500, b"last"]
    assert big not in await _shown(settings)
    await conn.execute("DELETE FROM outbox_parked WHERE id = $1", huge)  # cannot be fixed


async def test_a_parked_lifecycle_event_holds_its_syncs_later_events_until_retried(
    settings: Settings,
    service: Service,
    conn: asyncpg.Connection,
    lifecycle: Seen,
) -> None:
    """Versions stay gap-free: the events of the refused event's sync that follow it are parked
    behind it; the other syncs' go on. A retry puts them all back, published in order."""
    tag = secrets.token_hex(4)
    sync, other = f"sync-held-{tag}", f"sync-other-{tag}"
    topic = settings.lifecycle_topic
    await _max_message_bytes(settings, topic, 65_536)
    try:
        ids = await _insert(
            conn,
            [
                (topic, sync, PAYLOAD * 5000),  # v1: 75 KB, refused by the topic
                (topic, other, b"other-v1"),
                (topic, sync, b"v2"),  # behind v1: held
            ],
        )
        parked = await _parked(conn, [ids[0], ids[2]])
        assert (parked[ids[0]]["reason"], parked[ids[0]]["held_by"]) == ("too_large", None)
        assert (parked[ids[2]]["reason"], parked[ids[2]]["held_by"]) == ("held", ids[0])
        # A later event of the sync, written while v1 is parked, waits behind it too.
        [v3] = await _insert(conn, [(topic, sync, b"v3")])
        await _insert(conn, [(topic, other, b"other-v2")])
        assert await _values(lifecycle, other, 2) == [b"other-v1", b"other-v2"]
        assert (await _parked(conn, [v3]))[v3]["reason"] == "held"
        assert lifecycle.by_key[sync] == []
        shown = await _shown(settings)
        assert [shown[i]["reason"] for i in (ids[0], ids[2], v3)] == ["too_large", "held", "held"]
    finally:
        await _max_message_bytes(settings, topic, 4 * settings.max_message_bytes)
    # Retrying v1 puts back the events held behind it, under their own ids: in order.
    out = await _synclife(settings, "outbox", "retry", str(ids[0]), "--json")
    assert json.loads(out) == {"retried": [ids[0], ids[2], v3]}
    assert await _values(lifecycle, sync, 3) == [PAYLOAD * 5000, b"v2", b"v3"]
    await _insert(conn, [(topic, sync, b"v4")])
    assert await _values(lifecycle, sync, 4) == [PAYLOAD * 5000, b"v2", b"v3", b"v4"]


async def test_a_row_for_a_topic_that_does_not_exist_is_parked_until_the_topic_is_made(
    settings: Settings,
    service: Service,
    conn: asyncpg.Connection,
    results: Seen,
) -> None:
    tag = secrets.token_hex(4)
    missing = f"{SESSION_TOPICS}x{tag}.missing"
    key = f"k-{tag}"
    ids = await _insert(
        conn,
        [
            (settings.results_topic, key, b"before"),
            (missing, key, b"to a topic not made yet"),
            (settings.results_topic, key, b"after"),
        ],
    )
    parked = await _parked(conn, [ids[1]])  # once aiokafka's lookup gave up (40 s)
    assert parked[ids[1]]["reason"] == "unknown_topic"
    await _insert(conn, [(settings.results_topic, key, b"last")])
    assert await _values(results, key, 3) == [b"before", b"after", b"last"]
    assert (await _shown(settings))[ids[1]]["topic"] == missing

    await with_own_topics(settings, results_topic=missing)  # the cause fixed
    env = {**os.environ, "SYNCLIFE_DATABASE_URL": settings.database_url.get_secret_value()}
    code, _, err = await run_cli("outbox", "retry", env=env)
    assert code != 0 and "IDS" in err  # which rows: IDS or --all, never none by default
    out = await _synclife(settings, "outbox", "retry", str(ids[1]), "--json")
    assert json.loads(out) == {"retried": [ids[1]]}
    async for seen in watch(settings, missing):
        await _insert(conn, [(missing, key, b"last")])
        assert await _values(seen, key, 2) == [b"to a topic not made yet", b"last"]
